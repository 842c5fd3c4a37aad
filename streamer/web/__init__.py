"""The review page (issue 27): cameras, events with their evidence, marks that become training
clips in `data_dir/review/`.

The daemon serves it from its own thread when the config's `web:` section is enabled
(`server.WebServer`): it shows the daemon's live state (cameras, recent frames, the serving
model) beside the journal and the evidence, which it reads itself. Modules: `settings` (the
`web:` section), `auth` (logins, sessions, CSRF), `paths` (which files may be served), `store`
(the journal, read-only), `media` (clips as browsers play them), `review` (marks -> the review
dataset), `live` (the daemon's view), `app` (routes and templates in `views/`), `server` (the
HTTP thread).
"""
