"""What a program pays for a token: from the agent's cache vs with a provider call.

    python3 bench/tokenservice.py [--rounds N]

Starts the sandbox identity provider and the token service on 127.0.0.1,
signs in, then asks the token service for the same resource N times in two
ways side by side in one run: served from the agent's memory (the normal
case), and with the cache emptied before each request (every request then
makes a refresh grant to the provider, as a program without the token
service would). Prints time per request, provider calls per request and
their ratios. The provider is local here, so the real gap on a board
talking to login.microsoftonline.com over Wi-Fi is larger, not smaller.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    import logging
    import shutil
    logging.disable(logging.WARNING)      # "created ... readable by root only" is expected here
    scratch = tempfile.mkdtemp(prefix="bench-tokenservice-")
    for name, sub in (("CONFIG", "config"), ("STATE", "state"), ("RUNTIME", "run")):
        os.environ[f"ENTRA_AGENT_{name}_DIR"] = str(Path(scratch) / sub)

    import requests

    from agent import paths
    from agent.auth.tokens import TokenClient
    from agent.profiles import Profile, ProfileStore
    from agent.resourcetokens import ResourceTokens
    from agent.sandbox.idp import IdentityProvider
    from agent.tokensecret import ensure_secret, secret_path
    from agent.tokenservice import API_VERSION, IDENTITY_HEADER, TokenService
    from agent.tokenstore import TokenStore

    with IdentityProvider(auto_approve_after_polls=0, interval=0) as idp:
        paths.config_dir().mkdir(parents=True, exist_ok=True)
        store = ProfileStore(paths.profiles_file())
        store.save(Profile(name="default", client_id="00000000-0000-0000-0000-000000000001",
                           tenant_id="organizations", authority_host=idp.base_url))
        client = TokenClient(store.get("default"), store=TokenStore(paths.token_dir()))
        client.poll(client.request_code())
        tokens = ResourceTokens(client)
        secret = ensure_secret(secret_path())
        with TokenService(tokens, secret, port=0, rate=1e9, burst=10**9) as service:
            session = requests.Session()
            params = {"resource": "https://storage.azure.com", "api-version": API_VERSION}

            def ask() -> None:
                answer = session.get(service.endpoint, params=params,
                                     headers={IDENTITY_HEADER: secret}, timeout=10)
                assert answer.status_code == 200, answer.text

            ask()
            results = {}
            for label, empty in (("cached", False), ("provider", True)):
                calls = idp.counts["token.refresh_token"]
                start = time.perf_counter()
                for _ in range(args.rounds):
                    if empty:
                        tokens.forget()
                    ask()
                elapsed = time.perf_counter() - start
                results[label] = (elapsed / args.rounds * 1000,
                                  (idp.counts["token.refresh_token"] - calls) / args.rounds)
    shutil.rmtree(scratch, ignore_errors=True)
    cached, provider = results["cached"], results["provider"]
    print(f"{args.rounds} requests each for https://storage.azure.com through the token service")
    print(f"{'':>10} {'ms/request':>11} {'provider calls/request':>23}")
    print(f"{'cached':>10} {cached[0]:>11.2f} {cached[1]:>23.2f}")
    print(f"{'provider':>10} {provider[0]:>11.2f} {provider[1]:>23.2f}")
    print(f"ratio provider/cached: {provider[0] / cached[0]:.1f}x the time; "
          f"provider calls {provider[1]:.2f} vs {cached[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
