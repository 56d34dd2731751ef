"""Helpers the warm tests share with tests/cli/test_check.py and
tests/cli/test_export.py: a directory of chain files, a leaf no other test
has cached, a certificate's cache id and its staple in the local store, an
expired staple put there by hand, warm's rows by file name.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import uuid

from engine.store.providers import open_provider
from engine.ocsp.request import build_request
from engine.ocsp.certs import load_leaf
from engine.responders.transport import post
from tests.loopback import TRANSPORT
from tests.responder import Behaviour

#: renewal point already passed, still valid for 10 minutes
DUE = Behaviour(this_update_offset=-3000, next_update_offset=600)
_names = itertools.count()


def cert_id_of(issued) -> str:
    return hashlib.sha1(issued.der_path.read_bytes()).hexdigest()


def stored(home, issued):
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        return provider.get(cert_id_of(issued))


def certs_dir(tmp_path, *issued, name="certs"):
    """A directory holding the chain files of these leaves (and nothing else)."""
    directory = tmp_path / name
    directory.mkdir()
    for one in issued:
        shutil.copy(one.chain_path, directory / one.chain_path.name)
    return directory


def fresh_leaf(pki, prefix="leaf", **kwargs):
    """A leaf no other test has cached (memcached lives for the whole session)."""
    return pki.leaf(f"{prefix}-{next(_names)}-{uuid.uuid4().hex[:6]}", **kwargs)


def store_expired(home, pki, responder, issued):
    """Put a genuine response whose nextUpdate has passed into the local store
    (fetch and warm refuse to store one, so go round them)."""
    responder.script(issued, Behaviour(this_update_offset=-7200, next_update_offset=-120))
    leaf = load_leaf(issued.chain_path)
    der = post(responder.url, build_request(leaf).der, TRANSPORT)
    responder.script(issued, None)
    with open_provider(f"local:{home / 'staples.db'}") as provider:
        provider.set(leaf.cert_id, der, 600)
    return der


def rows_by_name(ran):
    return {row["cert"].rsplit("/", 1)[-1]: row for row in ran.rows()}
