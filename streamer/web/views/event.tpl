% rebase('base.tpl', title=event.event_id)
<h1>{{first.get('label')}} on {{first.get('camera')}}</h1>
<p class="muted">{{event.event_id}} · started {{first.get('published_at')}}
% if end:
 · ended {{end.get('published_at')}} ({{end.get('reason')}})
% else:
 · still open
% end
% if not camera_known:
 · <span class="missing">camera {{first.get('camera')}} is no longer configured</span>
% end
</p>
<h2>Review</h2>
<p>Verdict: <strong id="verdict">{{(verdict or 'not reviewed').replace('_', ' ')}}</strong></p>
<form class="inline" method="post" action="/events/{{event.event_id}}/mark">
<input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="verdict" value="real">
<button class="real" id="mark-real" type="submit">Real</button></form>
<form class="inline" method="post" action="/events/{{event.event_id}}/mark">
<input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="verdict" value="false_alarm">
<button class="false" id="mark-false" type="submit">False alarm</button></form>
<form method="post" action="/events/{{event.event_id}}/missed">
<input type="hidden" name="csrf" value="{{csrf}}">
Missed: <select name="label">
% for c in classes:
<option>{{c}}</option>
% end
</select> from <input name="start_s" size="5" inputmode="decimal" placeholder="0.0"> s
to <input name="end_s" size="5" inputmode="decimal" placeholder="{{'%.1f' % duration if duration else ''}}"> s of the clip
<button type="submit" id="mark-missed">Mark missed</button>
</form>
<div class="media"><div>
<h2>Snapshot</h2>
% if snapshot_missing:
<p class="missing" id="snapshot-missing">Snapshot: {{snapshot_missing}}.</p>
% else:
<img class="snap" src="/evidence/{{start.get('snapshot')}}" alt="snapshot with the box">
% end
</div><div>
<h2>Clip</h2>
% if clip_missing:
<p class="missing" id="clip-missing">Clip: {{clip_missing}}.</p>
% else:
<video id="clip" controls preload="metadata" src="/events/{{event.event_id}}/clip.webm"></video>
<p class="muted"><a href="/evidence/{{end.get('clip')}}">original MP4</a>{{(' · %.1f s, pre-roll included' % duration) if duration else ''}}</p>
% end
</div></div>
<h2>Score over time</h2>
{{!chart}}
<h2>Alerts</h2>
<table id="alerts"><tr><th>seq</th><th>type</th><th>published (UTC)</th><th>score</th><th>box</th><th>reason</th></tr>
% for a in event.alerts:
<tr><td>{{a.get('seq')}}</td><td>{{a.get('type')}}</td><td>{{a.get('published_at')}}</td>
<td>{{'%.3f' % a['score'] if isinstance(a.get('score'), (int, float)) else '-'}}</td>
<td>{{', '.join('%.2f' % v for v in a['box']) if a.get('box') else '-'}}</td><td>{{a.get('reason') or ''}}</td></tr>
% end
</table>
<h2>Marks</h2>
% if not marks:
<p>None yet.</p>
% else:
<table id="marks"><tr><th>when (UTC)</th><th>who</th><th>mark</th><th>clip</th></tr>
% for m in marks:
<tr><td>{{m.when}}</td><td>{{m.by}}</td><td>{{m.what}}</td><td>{{m.clip or 'none kept'}}</td></tr>
% end
</table>
<p class="muted">The last verdict counts; every mark is kept.</p>
% end
