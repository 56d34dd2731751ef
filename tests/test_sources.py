"""Certificate sources: files, directories and globs, as an operator names them."""

from __future__ import annotations

import shutil

import pytest

from engine.errors import CertificateFileError, IssuerNotFoundError
from engine.ocsp.certfiles import CertSpec, NoMatchError, expand, load_all


@pytest.fixture
def certs(tmp_path, pki):
    """A server's certificate directory: chains, a DER leaf, a key, and other files."""
    directory = tmp_path / "certs"
    directory.mkdir()
    shutil.copy(pki.good.chain_path, directory / "good.pem")
    shutil.copy(pki.other.chain_path, directory / "other.crt")
    shutil.copy(pki.no_aia.der_path, directory / "no_aia.der")
    shutil.copy(pki.good.key_path, directory / "good.key.pem")  # a key saved as .pem
    shutil.copy(pki.good.key_path, directory / "good.key")  # not a certificate suffix: ignored
    (directory / "README.txt").write_text("certificates for the web tier\n")
    (directory / "good.pem.ocsp").write_bytes(b"\x30\x03\x0a\x01\x00")  # a HAProxy staple
    (directory / "nested").mkdir()
    shutil.copy(pki.must_staple.chain_path, directory / "nested" / "deep.pem")
    return directory


def names(paths):
    return [p.name for p in paths]


class TestExpand:
    def test_a_directory_is_its_certificate_files_not_recursive(self, certs):
        assert names(expand([CertSpec(str(certs))])) == ["good.key.pem", "good.pem", "no_aia.der", "other.crt"]

    def test_a_file_is_itself(self, certs):
        assert expand([CertSpec(str(certs / "other.crt"))]) == [certs / "other.crt"]

    def test_a_glob(self, certs):
        assert names(expand([CertSpec(str(certs / "*.pem"))])) == ["good.key.pem", "good.pem"]
        assert names(expand([CertSpec(str(certs / "*" / "*.pem"))])) == ["deep.pem"]

    def test_a_glob_matching_a_directory_takes_its_files(self, certs):
        assert names(expand([CertSpec(str(certs / "nest*"))])) == ["deep.pem"]

    def test_deduplicated_and_sorted_whatever_the_order_of_specs(self, certs):
        specs = [
            CertSpec(str(certs / "other.crt")),
            CertSpec(str(certs)),
            CertSpec(str(certs / "good.pem")),
            CertSpec(str(certs / "*.crt")),
        ]
        paths = expand(specs)
        assert paths == sorted(set(paths))
        assert names(paths) == ["good.key.pem", "good.pem", "no_aia.der", "other.crt"]
        assert expand(list(reversed(specs))) == paths

    def test_relative_patterns_become_absolute(self, certs, monkeypatch):
        monkeypatch.chdir(certs)
        assert expand([CertSpec("good.pem"), CertSpec("./good.pem")]) == [certs / "good.pem"]

    def test_nothing_matched_expands_to_nothing(self, tmp_path):
        assert expand([CertSpec(str(tmp_path / "missing.pem")), CertSpec(str(tmp_path / "*.crt"))]) == []


class TestLoadAll:
    def test_leaves_and_problems_of_a_directory(self, certs, pki):
        result = load_all([CertSpec(str(certs))])
        assert sorted(leaf.path.name for leaf in result.leaves) == ["good.pem", "other.crt"]
        problems = {path.name: error for path, error in result.problems}
        assert set(problems) == {"good.key.pem", "no_aia.der"}
        assert isinstance(problems["good.key.pem"], CertificateFileError)
        assert "not a certificate" in str(problems["good.key.pem"])
        assert str(certs / "good.key.pem") in str(problems["good.key.pem"])
        # a lone DER leaf has no chain: the issuer must be given
        assert isinstance(problems["no_aia.der"], IssuerNotFoundError)
        assert "--issuer" in str(problems["no_aia.der"])

    def test_on_files_hears_the_number_of_files_before_any_is_read(self, certs, monkeypatch):
        import engine.ocsp.certfiles

        events = []
        real = engine.ocsp.certfiles.load_leaf

        def load_leaf(path, **kwargs):
            events.append("read")
            return real(path, **kwargs)

        monkeypatch.setattr(engine.ocsp.certfiles, "load_leaf", load_leaf)
        load_all([CertSpec(str(certs)), CertSpec(str(certs / "missing.pem"))], on_files=lambda n: events.append(n))
        assert events == [4, "read", "read", "read", "read"]

    def test_issuer_and_url_of_the_spec_apply_to_its_files(self, certs, pki, responder):
        spec = CertSpec(str(certs / "*.der"), issuer=pki.intermediate.cert_path, url=responder.url)
        result = load_all([spec])
        assert result.problems == []
        (leaf,) = result.leaves
        assert leaf.cert == pki.no_aia.cert
        assert leaf.issuer == pki.intermediate.cert
        assert leaf.responder_url() == responder.url

    def test_the_first_spec_that_finds_a_file_decides_its_options(self, certs, pki, responder):
        first = CertSpec(str(certs / "no_aia.der"), issuer=pki.intermediate.cert_path, url=responder.url)
        result = load_all([first, CertSpec(str(certs))])
        loaded = {leaf.path.name: leaf for leaf in result.leaves}
        assert loaded["no_aia.der"].url_override == responder.url

    def test_a_spec_matching_nothing_is_a_problem(self, tmp_path, certs):
        empty = tmp_path / "empty"
        empty.mkdir()
        specs = [
            CertSpec(str(tmp_path / "missing.pem")),
            CertSpec(str(tmp_path / "*.nothing")),
            CertSpec(str(empty)),
            CertSpec(str(certs / "good.pem")),
        ]
        result = load_all(specs)
        assert len(result.leaves) == 1
        assert [where for where, _ in result.problems] == [s.pattern for s in specs[:3]]
        for _, error in result.problems:
            assert isinstance(error, NoMatchError)
            assert error.reason == "no_match"
            assert "matches no file" in str(error)
        assert "no such file" in str(result.problems[0][1])
        assert "a directory with no" in str(result.problems[2][1])

    def test_a_certificate_in_two_files_is_loaded_once(self, certs):
        shutil.copy(certs / "good.pem", certs / "good-copy.pem")
        result = load_all([CertSpec(str(certs / "good*.pem"))])
        assert [leaf.path.name for leaf in result.leaves] == ["good-copy.pem"]  # the first, sorted

    def test_identical_issuers_are_one_object(self, certs, pki):
        for n in range(5):
            leaf = pki.leaf(f"shared-issuer-{n}")
            shutil.copy(leaf.chain_path, certs / f"shared-{n}.pem")
        result = load_all([CertSpec(str(certs / "*.pem")), CertSpec(str(certs / "*.crt"))])
        assert len(result.leaves) == 7
        assert len({id(leaf.issuer) for leaf in result.leaves}) == 1

    def test_unreadable_file_is_a_problem_not_a_crash(self, certs):
        (certs / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        result = load_all([CertSpec(str(certs / "broken.pem"))])
        assert result.leaves == []
        ((path, error),) = result.problems
        assert path == certs / "broken.pem"
        assert isinstance(error, CertificateFileError)
