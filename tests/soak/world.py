"""The world of one run: three CAs, their responders, the certificates, the
cache server, the configuration file, and the environment every staplectl
process gets.

Certificates are chain files (leaf + intermediate) in one directory per
CA, work/certs/ca-a/a-site-000.pem and so on: file stems are unique across
the directories, because `export --nginx DIR` names its files by stem and
refuses two certificates with the same one.

`Certs` is the registry every check consults: which certificate (by the
SHA-1 of its DER, the cache key's suffix) belongs to which CA and file,
and since when it is expected to have a staple. A replaced certificate
stays in it, retired, so that what the store and the commands still say
about it can be judged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.pki import PKI, Issued
from tests.soak.cacheserver import CacheServer
from tests.soak.ocspcheck import IssuerIds
from tests.soak.responders import ResponderFarm
from tests.soak.settings import SoakSettings

CA_NAMES = ("a", "b", "c")
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def staplectl_program() -> str:
    program = VENV_BIN / "staplectl"
    if not program.exists():
        raise RuntimeError(f"{program} is missing: run scripts/setup.sh (pip install -e .)")
    return str(program)


def sha1_of(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass
class CertInfo:
    sha1: str
    ca: int
    name: str
    path: Path
    cert: x509.Certificate
    issuer: IssuerIds
    #: from when a missing staple counts as lapsed (wall clock); None: from
    #: when the measurement starts
    expected_from: float | None = None
    #: when it left the configuration (replaced); None while configured
    retired_at: float | None = None

    def active_at(self, t: float) -> bool:
        return self.retired_at is None or t < self.retired_at


class Certs:
    """The registry of certificates, by SHA-1. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_sha1: dict[str, CertInfo] = {}

    def add(self, info: CertInfo) -> None:
        with self._lock:
            self._by_sha1[info.sha1] = info

    def get(self, sha1: str) -> CertInfo | None:
        with self._lock:
            return self._by_sha1.get(sha1)

    def all(self) -> list[CertInfo]:
        with self._lock:
            return list(self._by_sha1.values())

    def active(self) -> list[CertInfo]:
        with self._lock:
            return [c for c in self._by_sha1.values() if c.retired_at is None]

    def by_path(self, path: str | Path) -> list[CertInfo]:
        """Every certificate that ever lived at this path, newest first."""
        wanted = str(Path(path))
        with self._lock:
            found = [c for c in self._by_sha1.values() if str(c.path) == wanted]
        return sorted(found, key=lambda c: c.retired_at is None, reverse=True)


class World:
    def __init__(self, settings: SoakSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.home = workdir / "home"
        self.certs_dir = workdir / "certs"
        self.config_path = workdir / "staplectl.toml"
        self.certs = Certs()
        self._replaced = itertools.count(1)
        self._rand = random.Random(1234)
        self._chains: dict[str, bytes] = {}
        self.allow_loopback = False
        #: where the service's nginx action writes what nginx would staple
        #: (None: a product without renewal actions)
        self.served_dir: Path | None = None
        self.farm: ResponderFarm | None = None
        self.cache: CacheServer | None = None
        self.pkis: list[PKI] = []
        # The responders' child first: spawned before this process has any
        # thread of ours, and while it starts the PKIs are generated.
        self.farm = ResponderFarm(str(workdir / "responders.log"))
        try:
            if settings.provider != "local":
                self.cache = CacheServer(settings.provider)
            for ca, letter in enumerate(CA_NAMES):
                pki = PKI(workdir / "pki" / f"ca-{letter}", self.farm.url(ca))
                self.pkis.append(pki)
                self.farm.start_ca(ca, pki, settings.validity[ca])
                directory = self.ca_dir(ca)
                directory.mkdir(parents=True)
                ids = IssuerIds(pki.intermediate.cert, pki.good.cert)
                offsets = {}
                for n in range(settings.leaves_per_ca):
                    leaf = pki.leaf(f"{letter}-site-{n:03d}")
                    path = directory / f"{leaf.name}.pem"
                    path.write_bytes(leaf.chain_path.read_bytes())
                    self.certs.add(CertInfo(sha1_of(leaf.cert), ca, leaf.name, path, leaf.cert, ids))
                    offsets[leaf.serial] = -self._rand.uniform(1, settings.validity[ca] / 2 - 2)
                # The first staples as a responder's pre-generated ones are:
                # thisUpdate up to half a validity ago (same validity), so
                # that the certificates warmed in one go come due spread over
                # the whole renewal cycle, not in one burst every half-validity
                # that a fault could fall between. World.unspread() ends it.
                self.farm.spread(ca, settings.validity[ca], offsets)
            self.home.mkdir()
            self.write_config()
            self.allow_loopback = self._product_refuses_loopback()
            if self._product_has_actions():
                self.served_dir = workdir / "served"
                self.served_dir.mkdir()
            if self.allow_loopback or self.served_dir:
                self.write_config()
        except BaseException:
            self.close()
            raise

    def unspread(self) -> None:
        """After the first warm: every response fresh (thisUpdate now - 1 s) from here on."""
        assert self.farm is not None
        for ca in range(3):
            self.farm.unspread(ca)

    # -- where things are -------------------------------------------------------

    def ca_dir(self, ca: int) -> Path:
        return self.certs_dir / f"ca-{CA_NAMES[ca]}"

    @property
    def cache_uri(self) -> str:
        return self.cache.uri if self.cache else "local:"

    @property
    def store_path(self) -> Path:
        """The local store, as the README says: $STAPLECTL_HOME/staples.db."""
        return self.home / "staples.db"

    def env(self) -> dict[str, str]:
        """The environment of every staplectl process of this run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STAPLECTL_")}
        env.update(STAPLECTL_HOME=str(self.home), NO_COLOR="1", COLUMNS="200", TERM="dumb")
        # An installed staplectl runs with its bytecode compiled (pip does it
        # at install); a development shell's PYTHONDONTWRITEBYTECODE would
        # make every one-shot command compile every module again, which on
        # two cores is CPU the service would miss. The cache goes here, not
        # into the repository.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.workdir / "pycache")
        return env

    # -- the configuration ------------------------------------------------------

    def config_text(self) -> str:
        s = self.settings
        globs = ",\n".join(f'    "{self.ca_dir(ca)}/*.pem"' for ca in range(3))
        return (
            "# staplectl for the soak run: three CAs whose responses live "
            f"{s.validity[0]} to {s.validity[2]} s,\n"
            "# so every delay is seconds where an operator's would be minutes.\n"
            f'cache = "{self.cache_uri}"\n'
            "certificates = [\n"
            f"{globs}\n"
            "]\n\n"
            "[prefetch]\n"
            f'min_delay = "{s.min_delay}"        # responses of 1 minute: the default 1m would let them lapse\n'
            f'backoff_base = "{s.backoff_base}"\n'
            f'backoff_cap = "{s.backoff_cap}"      # a failing responder is asked again well within a validity\n'
            f"concurrency = {s.concurrency}\n"
            f"per_responder = {s.per_responder}\n\n"
            "[responder]\n"
            f'timeout = "{s.responder_timeout}"         # a hanging responder costs 3 s, not 10\n'
            + (
                'allow = ["loopback"]    # the responders run on this host (refused by default)\n'
                if self.allow_loopback else ""
            )
            + (
                "\n# what nginx would staple, kept by the service (the monitor checks it)\n"
                f'[[actions]]\ntype = "nginx"\ndirectory = "{self.served_dir}"\nreload = "true"\n'
                'min_interval = "2s"\n'
                if self.served_dir else ""
            )
        )

    def _product_refuses_loopback(self) -> bool:
        """Does this staplectl know responder.allow (and so refuse loopback responders unless allowed)?

        Asked of the installed command (`staplectl config --json`), not of
        its code: a version without the option refuses the key as unknown,
        one with it refuses the soak's responders unless allowed.
        """
        done = subprocess.run(
            [staplectl_program(), "config", "--json", "--config", str(self.config_path)],
            capture_output=True, text=True, env=self.env(), timeout=60,
        )  # fmt: skip
        try:
            data = json.loads(done.stdout)
            responder = data.get("config", data)["responder"]  # enveloped since schema 1
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"staplectl config --json failed (exit {done.returncode}): {done.stderr[-1000:]}") from None
        return "allow" in responder

    def _product_has_actions(self) -> bool:
        """Does this staplectl know [[actions]]? Asked as _product_refuses_loopback asks."""
        done = subprocess.run(
            [staplectl_program(), "config", "--json", "--config", str(self.config_path)],
            capture_output=True, text=True, env=self.env(), timeout=60,
        )  # fmt: skip
        try:
            data = json.loads(done.stdout)
            return "actions" in data.get("config", data)
        except (ValueError, TypeError):
            return False

    def write_config(self, text: str | None = None) -> None:
        """Written as a deploy tool would: a temporary file, then a rename."""
        write_atomic(self.config_path, (text if text is not None else self.config_text()).encode())

    def broken_config(self, variant: int) -> tuple[str, str]:
        """(what is wrong, the text): each fails differently when reloaded."""
        good = self.config_text()
        variants = [
            ("not TOML", good.replace("certificates = [", "certificates = [[", 1)),
            ("a bad duration", good.replace(f'min_delay = "{self.settings.min_delay}"', 'min_delay = "soon"', 1)),
            ("no certificate matches", good.replace(str(self.certs_dir), str(self.workdir / "nowhere"))),
        ]
        return variants[variant % len(variants)]

    # -- replacing a certificate ------------------------------------------------

    def prepare_replacement(self, ca: int) -> tuple[CertInfo, CertInfo]:
        """A new leaf of the same CA, to be written in place of a configured one.

        Returns (old, new); nothing is written and the registry is not
        changed: the caller registers the new one, commits, sends SIGHUP and
        retires the old one.
        """
        candidates = [c for c in self.certs.active() if c.ca == ca]
        old = self._rand.choice(candidates)
        leaf: Issued = self.pkis[ca].leaf(f"{CA_NAMES[ca]}-renewed-{next(self._replaced):03d}")
        new = CertInfo(sha1_of(leaf.cert), ca, old.name, old.path, leaf.cert, old.issuer)
        self._chains[new.sha1] = leaf.chain_path.read_bytes()
        return old, new

    def commit_replacement(self, new: CertInfo) -> None:
        """The new chain written over the old file atomically, as a deploy tool does."""
        write_atomic(new.path, self._chains.pop(new.sha1))

    # -- the end ----------------------------------------------------------------

    def close(self) -> None:
        if self.farm is not None:
            self.farm.stop()
            self.farm = None
        if self.cache is not None:
            self.cache.close()


def write_atomic(path: Path, data: bytes) -> None:
    """A temporary file in the same directory (not matching *.pem), fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
