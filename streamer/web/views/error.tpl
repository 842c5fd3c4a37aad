% rebase('base.tpl', title=heading)
<h1>{{heading}}</h1>
<p id="error">{{text}}</p>
<p><a href="/events">Back to the events</a></p>
