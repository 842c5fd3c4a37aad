% rebase('base.tpl', title='Events')
<h1>Events</h1>
<form class="filters" method="get" action="/events">
<label>camera <select name="camera"><option value="">all</option>
% for c in camera_choices:
<option {{'selected' if c == flt.camera else ''}}>{{c}}</option>
% end
</select></label>
<label>label <select name="label"><option value="">all</option>
% for c in label_choices:
<option {{'selected' if c == flt.label else ''}}>{{c}}</option>
% end
</select></label>
<label>review <select name="state">
% for value, text in (('', 'all'), ('unreviewed', 'not reviewed'), ('real', 'real'), ('false_alarm', 'false alarm')):
<option value="{{value}}" {{'selected' if value == (flt.state or '') else ''}}>{{text}}</option>
% end
</select></label>
<label>from <input type="datetime-local" name="since" value="{{since}}"></label>
<label>to <input type="datetime-local" name="until" value="{{until}}"></label>
<button type="submit">Filter</button>
</form>
<p class="muted">Times are UTC.</p>
<table id="events">
<tr><th>started (UTC)</th><th>camera</th><th>label</th><th>score</th><th>state</th><th>review</th><th>snapshot</th></tr>
% for e in rows:
<tr class="event">
<td><a class="event-link" href="/events/{{e.event_id}}">{{e.started.replace('T', ' ')[:19]}}</a></td>
<td>{{e.camera}}</td><td>{{e.label}}</td><td>{{'%.2f' % e.max_score}}</td>
<td>{{('ended: ' + str(e.end.get('reason'))) if e.end else 'open'}}</td>
<td>{{(e.verdict or '').replace('_', ' ') or '-'}}</td>
<td>
% if e.snapshot:
<img class="thumb" loading="lazy" src="/evidence/{{e.snapshot}}" alt="">
% end
</td></tr>
% end
</table>
% if not rows:
<p>No events match.</p>
% end
<p>
% if newer:
<a href="{{newer}}">newest</a>
% end
% if older:
 · <a id="older" href="{{older}}">older events</a>
% end
</p>
