% rebase('base.tpl', title='Cameras')
<h1>Cameras</h1>
<p class="muted">Serving model: <code id="model-path">{{model.get('checkpoint') or 'unknown'}}</code> on {{model.get('device') or '?'}}</p>
<div class="cards">
% for cam in cameras:
<div class="card camera" id="camera-{{cam['name']}}">
  <h2>{{cam['name']}}
  % if cam.get('up') is None:
    <span class="down">{{'disabled' if not cam.get('enabled', True) else 'not running'}}</span>
  % elif cam['up']:
    <span class="up">up</span>
  % else:
    <span class="down">down</span>
  % end
  </h2>
  <div class="muted">{{cam.get('url', '')}}</div>
  <div>{{'%.1f' % cam['fps'] if cam.get('fps') else '-'}} fps · last frame {{'%.1f s ago' % cam['last_frame_age_s'] if cam.get('last_frame_age_s') is not None else 'never'}}</div>
  <div>open events: {{', '.join(open_events.get(cam['name'], [])) or 'none'}}</div>
  % if cam.get('up'):
  <img src="/cameras/{{cam['name']}}/frame.jpg" alt="recent frame of {{cam['name']}}">
  <form method="post" action="/cameras/{{cam['name']}}/missed">
  <input type="hidden" name="csrf" value="{{csrf}}">
  Missed in the last seconds: <select name="label">
  % for c in classes:
  <option>{{c}}</option>
  % end
  </select> <button type="submit" class="missed-live">Keep as missed</button>
  </form>
  % end
  <p><a href="/events?camera={{cam['name']}}">events of {{cam['name']}}</a></p>
</div>
% end
% if not cameras:
<p>No cameras are configured.</p>
% end
</div>
