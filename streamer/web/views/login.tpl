% rebase('base.tpl', title='Log in')
<h1>Log in</h1>
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{{csrf}}">
<input type="hidden" name="next" value="{{next}}">
% if users:
<p><label>user <input name="user" autocomplete="username"></label></p>
% end
<p><label>{{'password' if users else 'token'}}{{' (or the access token, user empty)' if users and token else ''}} <input type="password" name="secret" autocomplete="current-password"></label></p>
<button type="submit">Log in</button>
</form>
