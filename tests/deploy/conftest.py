"""The production setup run for real: gunicorn (gunicorn.conf.py, several workers) on a clone
of the demo city, with the real nginx in front using deploy/nginx/gridmgmt.conf, on spare
ports, over TLS with a certificate made for the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import ROOT, demo_clone
from tests.support import app_environment, free_port, require, stop_group, wait_for
from tests.support import gunicorn as gunicorn_process

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE = ROOT / "deploy" / "nginx" / "gridmgmt.conf"


@dataclass(frozen=True)
class Gunicorn:
    """A running gunicorn: its address, photo folder and log."""

    url: str
    port: int
    photo_dir: Path
    log: Path


@dataclass(frozen=True)
class Nginx:
    """The running nginx in front: its HTTPS and HTTP addresses and its folder."""

    https: str
    http: str
    folder: Path
    certificate: Path  # the test's self-signed certificate: clients trust it, and only it


@pytest.fixture(scope="session")
def deploy_db(demo_database_url: URL) -> Iterator[URL]:
    """A clone of the demo city for the production-setup tests."""
    with demo_clone("deploy", demo_database_url) as url:
        yield url


@pytest.fixture(scope="session")
def gunicorn(
    deploy_db: URL, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """The real gunicorn with the project's gunicorn.conf.py: two workers on loopback, the
    settings of deploy/gridmgmt.env that matter behind nginx (one trusted proxy, Secure
    cookies)."""
    folder = tmp_path_factory.mktemp("gunicorn")
    port = free_port()
    env = app_environment(
        deploy_db,
        redis_url,
        folder / "photos",
        TRUSTED_PROXIES="1",
        SESSION_COOKIE_SECURE="true",
        WEB_THREADS="2",
    )
    process = gunicorn_process(env, port, folder / "gunicorn.log", workers=2)
    try:
        yield Gunicorn(f"http://127.0.0.1:{port}", port, folder / "photos", folder / "gunicorn.log")
    finally:
        stop_group(process)


def site_for_test(
    gunicorn_port: int, https_port: int, http_port: int, cert: Path, folder: Path
) -> str:
    """deploy/nginx/gridmgmt.conf with this machine's ports, paths and certificate: every
    replaced text must be found, so the test runs the shipped file, not a copy of it."""
    site = SITE.read_text()
    for old, new in (
        ("listen [::]:80;\n", ""),
        ("listen [::]:443 ssl http2;\n", ""),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{gunicorn_port};"),
        ("/etc/ssl/certs/gridmgmt.pem", str(cert.with_suffix(".pem"))),
        ("/etc/ssl/private/gridmgmt.key", str(cert.with_suffix(".key"))),
        ("/opt/gridmgmt/", f"{ROOT}/"),
        ("/var/log/nginx/", f"{folder}/"),
    ):
        assert old in site, f"{SITE} no longer contains {old!r}"
        site = site.replace(old, new)
    return site


@pytest.fixture(scope="session")
def nginx(gunicorn: Gunicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """The real nginx (Debian's) with the shipped site, in front of the gunicorn."""
    require("tools", Path(NGINX).exists(), f"no nginx at {NGINX} (apt-get install nginx-light)")
    folder = tmp_path_factory.mktemp("nginx")
    cert = folder / "gridmgmt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(cert.with_suffix(".key")), "-out", str(cert.with_suffix(".pem"))],
        check=True, capture_output=True,
    )  # fmt: skip
    https_port, http_port = free_port(), free_port()
    site = site_for_test(gunicorn.port, https_port, http_port, cert, folder)
    (folder / "site.conf").write_text(site)
    temp_paths = ""
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / name).mkdir()
        temp_paths += f"  {name}_temp_path {folder / name};\n"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the checkout's files
    (folder / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log;\nevents {{ worker_connections 256; }}\n"
        "http {\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n"
        f"  access_log {folder}/access.log;\n{temp_paths}  include {folder}/site.conf;\n}}\n"
    )
    check = subprocess.run(
        [NGINX, "-t", "-p", str(folder), "-c", str(folder / "nginx.conf")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    https = f"https://127.0.0.1:{https_port}"
    try:
        wait_for(f"{https}/healthz", verify=str(cert.with_suffix(".pem")))
        yield Nginx(https, f"http://127.0.0.1:{http_port}", folder, cert.with_suffix(".pem"))
    finally:
        process.terminate()
        process.wait(timeout=30)
