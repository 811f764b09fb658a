"""The CPU kernels' library (engine/cpu_rows.py) cannot be planted by another local user.

The library is compiled into ``cache_dir()/kernels`` and loaded with ctypes: whoever can
write there runs code in the server. These tests run under a model cache of their own
(TEALTAB_CACHE). Most build a tiny C file in place of the kernels' sources (milliseconds,
and its one function says which library was loaded); one builds and loads the real ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess

import pytest
import torch
import torch.nn.functional as F

from tealtab.engine import cpu_rows

GENUINE = 42
PLANTED = 666


@pytest.fixture
def cc():
    cc = cpu_rows._compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    return cc


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("TEALTAB_CACHE", str(root))
    return root


@pytest.fixture
def probe(tmp_path, monkeypatch, cache):
    """The kernels' sources swapped for one tiny C file whose tealtab_probe() returns 42."""
    source = tmp_path / "probe.c"
    source.write_text(f"int tealtab_probe(void) {{ return {GENUINE}; }}\n")
    monkeypatch.setattr(cpu_rows, "SOURCES", (source,))
    monkeypatch.setattr(cpu_rows, "HEADERS", ())
    return source


@pytest.fixture
def compiles(monkeypatch):
    """The compiler runs that build the kernels' library (not `cc --version`, not a planted
    library), as argv lists."""
    runs = []
    real_run = subprocess.run

    def run(argv, *args, **kwargs):
        if str(cpu_rows.SOURCES[0]) in argv:
            runs.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(cpu_rows.subprocess, "run", run)
    return runs


def planted_library(cc, tmp_path) -> bytes:
    """What another user would put in the library's place: tealtab_probe() returns 666."""
    source, out = tmp_path / "planted.c", tmp_path / "planted.so"
    source.write_text(f"int tealtab_probe(void) {{ return {PLANTED}; }}\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(source)], check=True)
    return out.read_bytes()


def recorded(library):
    return library.with_name(library.name + ".sha256").read_text().strip()


def test_the_first_use_builds_into_a_private_folder_and_records_the_digest(cc, cache, probe, compiles):
    library = cpu_rows._build(cc)
    assert library.parent == cache / "kernels"
    assert stat.S_IMODE(os.stat(library.parent).st_mode) == 0o700
    assert not os.stat(library).st_mode & 0o022
    assert recorded(library) == hashlib.sha256(library.read_bytes()).hexdigest()
    assert len(compiles) == 1
    # Later uses load what is there, without compiling.
    assert cpu_rows._build(cc) == library and len(compiles) == 1
    assert cpu_rows._load_library(cc).tealtab_probe() == GENUINE and len(compiles) == 1


def test_a_library_tampered_with_after_the_build_is_rebuilt_not_loaded(cc, cache, probe, compiles, tmp_path,
                                                                          caplog):
    library = cpu_rows._build(cc)  # built, not loaded (a loaded file is never written in place)
    digest = recorded(library)
    library.write_bytes(planted_library(cc, tmp_path))  # same owner, same mode: only the content differs
    with caplog.at_level(logging.WARNING, logger=cpu_rows.__name__):
        lib = cpu_rows._load_library(cc)
    assert lib.tealtab_probe() == GENUINE
    assert len(compiles) == 2
    assert "does not have the SHA-256 its build recorded" in caplog.text
    assert hashlib.sha256(library.read_bytes()).hexdigest() == recorded(library) == digest


def test_a_library_without_its_recorded_digest_is_rebuilt(cc, cache, probe, compiles, caplog):
    library = cpu_rows._build(cc)
    library.with_name(library.name + ".sha256").unlink()
    with caplog.at_level(logging.WARNING, logger=cpu_rows.__name__):
        assert cpu_rows._build(cc) == library
    assert len(compiles) == 2 and "none recorded" in caplog.text
    assert recorded(library) == hashlib.sha256(library.read_bytes()).hexdigest()


def test_a_library_others_may_write_is_rebuilt(cc, cache, probe, compiles, tmp_path, caplog):
    library = cpu_rows._build(cc)
    os.chmod(library, 0o777)
    with caplog.at_level(logging.WARNING, logger=cpu_rows.__name__):
        assert cpu_rows._load_library(cc).tealtab_probe() == GENUINE
    assert len(compiles) == 2 and "writable by group or others" in caplog.text
    assert not os.stat(library).st_mode & 0o022


def test_a_symbolic_link_in_the_librarys_place_is_not_followed(cc, cache, probe, compiles, tmp_path):
    library = cpu_rows._build(cc)
    elsewhere = tmp_path / "elsewhere.so"
    elsewhere.write_bytes(planted_library(cc, tmp_path))
    library.unlink()
    library.symlink_to(elsewhere)
    assert cpu_rows._load_library(cc).tealtab_probe() == GENUINE
    assert len(compiles) == 2 and not library.is_symlink()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_a_library_of_another_user_is_rebuilt(cc, cache, probe, compiles, tmp_path):
    library = cpu_rows._build(cc)
    library.write_bytes(planted_library(cc, tmp_path))
    os.chown(library, 65534, 65534)
    digest = hashlib.sha256(library.read_bytes()).hexdigest()
    library.with_name(library.name + ".sha256").write_text(digest + "\n")  # even with a matching digest
    assert cpu_rows._load_library(cc).tealtab_probe() == GENUINE
    assert len(compiles) == 2 and os.stat(library).st_uid == os.geteuid()


def test_a_kernels_folder_others_may_write_is_made_private(cc, cache, probe, compiles, caplog):
    """Fixed, not refused: it is this user's folder (an older tealtab, a umask of 002); what
    is in it is then checked file by file as always."""
    (cache / "kernels").mkdir(parents=True)
    os.chmod(cache / "kernels", 0o777)
    with caplog.at_level(logging.WARNING, logger=cpu_rows.__name__):
        assert cpu_rows._load_library(cc).tealtab_probe() == GENUINE
    assert stat.S_IMODE(os.stat(cache / "kernels").st_mode) == 0o700
    assert "made it 0o700" in caplog.text


def test_a_kernels_folder_of_another_user_is_refused(cc, cache, probe, compiles, monkeypatch):
    (cache / "kernels").mkdir(parents=True, mode=0o700)
    owner = os.stat(cache / "kernels").st_uid
    monkeypatch.setattr(cpu_rows, "_euid", lambda: owner + 1)  # as if another user had made it
    with pytest.raises(cpu_rows.UnsafeKernelDir, match="belongs to user id"):
        cpu_rows._build(cc)
    assert compiles == [] and os.listdir(cache / "kernels") == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_a_kernels_folder_chowned_to_another_user_is_refused(cc, cache, probe, compiles):
    (cache / "kernels").mkdir(parents=True, mode=0o700)
    os.chown(cache / "kernels", 65534, 65534)
    with pytest.raises(cpu_rows.UnsafeKernelDir, match="belongs to user id 65534"):
        cpu_rows._build(cc)
    assert compiles == []


def test_the_key_covers_sources_compiler_flags_and_cpu(monkeypatch):
    base = cpu_rows._key(b"int x;", "/usr/bin/cc\0cc 12", ("-O3",))
    assert len(base) == 32
    assert cpu_rows._key(b"int y;", "/usr/bin/cc\0cc 12", ("-O3",)) != base
    assert cpu_rows._key(b"int x;", "/usr/bin/cc\0cc 13", ("-O3",)) != base
    assert cpu_rows._key(b"int x;", "/usr/bin/cc\0cc 12", ("-O3", "-march=native")) != base
    monkeypatch.setattr(cpu_rows, "_cpu_key", lambda: "flags : sse2")
    assert cpu_rows._key(b"int x;", "/usr/bin/cc\0cc 12", ("-O3",)) != base


def test_each_flag_set_builds_a_library_of_its_own(cc, cache, probe, compiles, monkeypatch):
    """A compiler that refuses -march=native gets the plain -O3 build under that build's own
    key, found again on later uses without retrying the refused flags."""
    real_run = cpu_rows.subprocess.run

    def run(argv, *args, **kwargs):
        if "-march=native" in argv:
            return subprocess.CompletedProcess(argv, 1, "", "unsupported -march")
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(cpu_rows.subprocess, "run", run)
    library = cpu_rows._build(cc)
    assert [argv for argv in compiles if "-march=native" not in argv]  # the -O3 build ran
    source = probe.read_bytes()
    cid = cpu_rows._compiler_id(cc)
    assert library == cache / "kernels" / f"cpu_rows-{cpu_rows._key(source, cid, ('-O3',))}.so"
    count = len(compiles)
    assert cpu_rows._build(cc) == library and len(compiles) == count


@torch.inference_mode()
def test_the_real_kernels_load_after_tampering_and_a_refused_folder_falls_back_to_torch(
        cc, cache, tmp_path, monkeypatch, caplog):
    """End to end with the real sources: a tampered library is rebuilt and load() serves the
    kernel; with a refused folder, load() says why and CpuRowsLinear keeps the torch paths."""
    from tealtab.engine.linear import CpuRowsLinear

    for name in ("_lib", "_failed", "_pool", "_threads"):
        monkeypatch.setattr(cpu_rows, name, getattr(cpu_rows, name))
    monkeypatch.setattr(cpu_rows, "_lib", None)
    monkeypatch.setattr(cpu_rows, "_failed", None)
    monkeypatch.delenv("TEALTAB_CPU_KERNEL", raising=False)
    library = cpu_rows._build(cc)
    library.write_bytes(planted_library(cc, tmp_path))
    assert cpu_rows.load(), cpu_rows._failed
    assert recorded(library) == hashlib.sha256(library.read_bytes()).hexdigest()
    torch.manual_seed(0)
    w = torch.randn(40, 24).bfloat16()
    x = torch.randn(3, 24)
    torch.testing.assert_close(cpu_rows.rows_times_weight(x, cpu_rows.pack(w), 40), x @ w.float().t(),
                               atol=1e-4, rtol=1e-4)

    monkeypatch.setattr(cpu_rows, "_lib", None)
    monkeypatch.setattr(cpu_rows, "_failed", None)
    owner = os.stat(cache / "kernels").st_uid
    monkeypatch.setattr(cpu_rows, "_euid", lambda: owner + 1)
    with caplog.at_level(logging.WARNING, logger=cpu_rows.__name__):
        assert cpu_rows.load() is False
    assert "belongs to user id" in cpu_rows._failed
    assert "CPU bf16 rows kernel unavailable, using torch matmuls" in caplog.text
    lin = CpuRowsLinear(w.float())
    assert not cpu_rows.is_packed(lin.weight_lowp)
    torch.testing.assert_close(lin(x), F.linear(x, w.float()), atol=1e-5, rtol=1e-5)
