<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}} · Vigil</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #f6f6f4; }
header { background: #22313f; color: #fff; padding: .6em 1em; display: flex; gap: 1.5em; align-items: baseline; }
header a { color: #fff; } header .model { margin-left: auto; font-size: .85em; opacity: .85; }
main { padding: 1em; max-width: 1100px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
.up { color: #1a7f37; font-weight: bold; } .down { color: #b3261e; font-weight: bold; }
.msg { background: #fff3c4; padding: .6em 1em; border-left: 4px solid #d4a000; margin-bottom: 1em; }
.missing { color: #b3261e; font-style: italic; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { background: #fff; padding: .8em; border: 1px solid #ddd; width: 320px; }
.card img { width: 100%; background: #000; }
form.inline { display: inline; } button { font: inherit; padding: .3em .9em; cursor: pointer; }
button.real { background: #1a7f37; color: #fff; border: 0; } button.false { background: #b3261e; color: #fff; border: 0; }
.filters label { margin-right: .8em; } .thumb { width: 96px; }
.media { display: flex; flex-wrap: wrap; gap: 1.5em; }
video, .snap { width: 480px; max-width: 100%; background: #000; }
.muted { color: #666; font-size: .9em; }
</style>
</head>
<body>
<header><strong>Vigil</strong> <a href="/">Cameras</a> <a href="/events">Events</a>
<span class="model">model: {{model.get('name') or 'unknown'}}{{(' · ' + ', '.join(model.get('classes') or [])) if model.get('classes') else ''}}{{(' · user ' + user) if user else ''}}</span>
</header>
<main>
% if msg:
<p class="msg" id="message">{{msg}}</p>
% end
{{!base}}
</main>
</body>
</html>
