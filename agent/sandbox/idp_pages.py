"""The sandbox identity provider's sign-in pages (RFC 8628 §3.3), as HTML
that works in a real browser: type the code, Approve or Decline."""

from __future__ import annotations

import html

from agent.sandbox.idp_grants import SignIn

__all__ = ["page", "signed_in_page", "signin_form"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f3f3f3;margin:0;color:#1b1b1b}
main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem 2.5rem;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:1.5rem;font-weight:600;margin:0 0 1rem}
label{display:block;margin:1rem 0 .3rem;font-size:.9rem}
input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1.1rem;border:1px solid #888}
input[name=code]{font-family:ui-monospace,monospace;letter-spacing:.15em;text-transform:uppercase}
.buttons{margin-top:1.5rem;display:flex;gap:.75rem;justify-content:flex-end}
button{padding:.5rem 1.5rem;font-size:1rem;border:0;cursor:pointer}
button[value=approve]{background:#0067b8;color:#fff}
button[value=decline]{background:#ccc}
.note{color:#666;font-size:.8rem;margin-top:1.5rem}
"""


def page(title: str, body_html: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body_html}"
        '<p class=note>Local sign-in sandbox for entra-device-agent. No real account is involved.</p>'
        "</main></body></html>"
    )


def signin_form(code: str, account: str) -> str:
    return page(
        "Enter code",
        "<p>Enter the code displayed on your device to allow it to sign in.</p>"
        '<form method=post action="/devicelogin">'
        f'<label for=code>Code</label><input id=code name=code value="{html.escape(code, quote=True)}" '
        'autocomplete=off autofocus required>'
        f'<label for=account>Account</label><input id=account name=account value="{html.escape(account, quote=True)}">'
        '<div class=buttons><button name=action value=decline>Decline</button>'
        "<button name=action value=approve>Approve</button></div></form>",
    )


def signed_in_page(result: SignIn) -> tuple[int, str]:
    """The status and page that answer the sign-in form."""
    if result.outcome == "refused":
        return 400, page(
            "Code not accepted",
            "<p>That code is not valid or has expired. Check the code on your device and try again.</p>"
            '<p><a href="/devicelogin">Enter a code</a></p>',
        )
    if result.outcome == "declined":
        return 200, page("Sign-in declined", "<p>You declined to sign in to the application on your device.</p>"
                         "<p>You can close this window.</p>")
    return 200, page(
        "You're signed in",
        f"<p>You have signed in to the application on your device as <b>{html.escape(result.account)}</b>.</p>"
        "<p>You may now close this window.</p>",
    )
