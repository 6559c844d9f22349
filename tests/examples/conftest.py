"""Fixtures: a `codepipeline-gateway dev` instance on free loopback ports, its
emulator's control API, and runners for the example workers.

The gateway binary is target/debug/codepipeline-gateway unless CPGW_BIN names
another; scripts/test-examples.sh builds it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_WORKER = REPO / "examples" / "python-worker"
NODE_WORKER = REPO / "examples" / "node-worker"
GO_WORKER_BINARY = REPO / "target" / "go-worker" / "go-worker"

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
WORKER_TIMEOUT = 60.0

CUSTOM_JOB_LINE = re.compile(r"^\s*custom job (?P<job_id>\S+)\s*$")
PARTNER_JOB_LINE = re.compile(
    r"^\s*partner \(third-party\) job (?P<job_id>\S+)\s+clientId (?P<client_id>\S+)"
    r"\s+clientToken (?P<client_token>\S+)\s*$"
)


def free_ports(count: int) -> list[int]:
    """Ports the kernel handed out for port 0, all held until all are known."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Emulator:
    """The emulator's control API (HTTP JSON under /_emulator/)."""

    def __init__(self, base_url: str):
        self.base_url = base_url

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create_job(
        self,
        kind: str = "custom",
        *,
        action_type_id: dict | None = None,
        configuration: dict[str, str] | None = None,
        account_id: str | None = None,
        region: str | None = None,
    ) -> dict:
        body: dict = {"kind": kind}
        if action_type_id is not None:
            body["actionTypeId"] = action_type_id
        if configuration is not None:
            body["configuration"] = configuration
        if account_id is not None:
            body["accountId"] = account_id
        if region is not None:
            body["region"] = region
        return self._call("POST", "/_emulator/jobs", body)

    def add_role(self, role_arn: str, external_id: str | None = None) -> None:
        """A role STS AssumeRole hands sessions out for (trusting the home account)."""
        body: dict = {"roleArn": role_arn}
        if external_id is not None:
            body["externalId"] = external_id
        self._call("POST", "/_emulator/roles", body)

    def register_action_type(self, action_type_id: dict) -> None:
        self._call("POST", "/_emulator/action-types", action_type_id)

    def jobs(self) -> list[dict]:
        return self._call("GET", "/_emulator/jobs")["jobs"]

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/_emulator/jobs/{job_id}")

    def requests(self, job_id: str | None = None) -> list[dict]:
        """Every request AWS received, in order; only one job's when job_id is given."""
        recorded = self._call("GET", "/_emulator/requests")["requests"]
        if job_id is None:
            return recorded
        return [r for r in recorded if (r.get("body") or {}).get("jobId") == job_id]

    def clear_requests(self) -> None:
        self._call("DELETE", "/_emulator/requests")

    def inject(self, **fault) -> None:
        self._call("POST", "/_emulator/faults", fault)

    def pending_faults(self) -> list[dict]:
        return self._call("GET", "/_emulator/faults")["faults"]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_emulator/faults")


@dataclass
class DevGateway:
    process: subprocess.Popen
    grpc_target: str
    emulator: Emulator
    custom_jobs: list[str] = field(default_factory=list)
    partner_jobs: list[dict] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)


def _pump(stream, lines: list[str], seen: threading.Event | None, needle: str | None):
    for line in iter(stream.readline, ""):
        lines.append(line.rstrip("\n"))
        if seen is not None and needle in line:
            seen.set()
    stream.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture(scope="session")
def gateway_binary() -> Path:
    binary = Path(os.environ.get("CPGW_BIN", REPO / "target" / "debug" / "codepipeline-gateway"))
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: run `cargo build --locked` first")
    return binary


@pytest.fixture(scope="session")
def dev(gateway_binary: Path):
    """One `codepipeline-gateway dev` for the session; tests make their own jobs."""
    grpc_port, admin_port, emulator_port = free_ports(3)
    env = dict(os.environ, NO_COLOR="1")
    # Settings from the environment would override the flags' defaults.
    for name in list(env):
        if name.startswith("CPGW_") and name != "CPGW_BIN":
            del env[name]
    process = subprocess.Popen(
        [
            str(gateway_binary),
            "dev",
            "--listen",
            f"127.0.0.1:{grpc_port}",
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
            "--emulator-listen",
            f"127.0.0.1:{emulator_port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    gateway = DevGateway(
        process=process,
        grpc_target=f"127.0.0.1:{grpc_port}",
        emulator=Emulator(f"http://127.0.0.1:{emulator_port}"),
    )
    listening = threading.Event()
    pumps = [
        threading.Thread(
            target=_pump, args=(process.stdout, gateway.stdout_lines, None, None), daemon=True
        ),
        threading.Thread(
            target=_pump,
            args=(process.stderr, gateway.stderr_lines, listening, "gateway listening"),
            daemon=True,
        ),
    ]
    for pump in pumps:
        pump.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not listening.wait(0.1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "codepipeline-gateway dev did not start listening:\n"
                    + "\n".join(gateway.stderr_lines[-30:])
                )
        # The banner is printed before the gateway listens; allow the pipe to drain.
        banner_deadline = time.monotonic() + 5
        while time.monotonic() < banner_deadline:
            if any(PARTNER_JOB_LINE.match(line) for line in gateway.stdout_lines):
                break
            time.sleep(0.05)
        for line in gateway.stdout_lines:
            if m := CUSTOM_JOB_LINE.match(line):
                gateway.custom_jobs.append(m["job_id"])
            elif m := PARTNER_JOB_LINE.match(line):
                gateway.partner_jobs.append(m.groupdict())
        if not gateway.custom_jobs or not gateway.partner_jobs:
            raise RuntimeError("no ready-made jobs in the banner:\n" + "\n".join(gateway.stdout_lines))
        yield gateway
    finally:
        _stop(process)
        for pump in pumps:
            pump.join(timeout=5)


def _start(command: list[str], env: dict[str, str], ready: str, what: str):
    """Starts a process whose stdout and stderr are collected; returns it with
    its stdout and stderr lines once a line containing `ready` appeared."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stdout_lines: list[str] = []
    stderr_lines: list[str] = []
    seen = threading.Event()
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout, stdout_lines, seen, ready), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, stderr_lines, seen, ready), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not seen.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"{what} did not start:\n" + "\n".join(stdout_lines + stderr_lines[-30:]))
    return process, stdout_lines, stderr_lines


def _clean_env() -> dict[str, str]:
    """The environment without settings of the gateway or of AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CPGW_", "AWS_"))}
    env["NO_COLOR"] = "1"
    return env


@dataclass
class StandaloneEmulator:
    """`codepipeline-gateway emulator`: the emulator alone, in its own process."""

    control: Emulator
    aws_env: dict[str, str]  # AWS_ENDPOINT_URL, AWS_REGION and its dev credentials


@pytest.fixture(scope="session")
def standalone_emulator(gateway_binary: Path):
    (port,) = free_ports(1)
    process, stdout_lines, _ = _start(
        [str(gateway_binary), "emulator", "--listen", f"127.0.0.1:{port}"],
        _clean_env(),
        "AWS_SECRET_ACCESS_KEY=",
        "codepipeline-gateway emulator",
    )
    try:
        # It prints the settings an AWS SDK needs to use it, on one line.
        line = next(line for line in stdout_lines if "AWS_SECRET_ACCESS_KEY=" in line)
        aws_env = dict(word.split("=", 1) for word in line.split() if word.startswith("AWS_"))
        assert set(aws_env) == {
            "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"
        }, line  # fmt: skip
        yield StandaloneEmulator(Emulator(aws_env["AWS_ENDPOINT_URL"]), aws_env)
    finally:
        _stop(process)


@dataclass
class ServedGateway:
    grpc_target: str
    stderr_lines: list[str]


@pytest.fixture
def serve_gateway(gateway_binary: Path, standalone_emulator: StandaloneEmulator, tmp_path: Path):
    """Starts `codepipeline-gateway serve` against the standalone emulator, with
    a client-token map: serve_gateway(tokens, host=...) -> ServedGateway.

    The map's file must exist when the gateway starts, and the emulator gives
    every partner job a fresh clientId and clientToken: so the tests create
    their partner jobs first, then write the file, then start the gateway."""
    started = []

    def start(
        tokens: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        callers: dict[str, str] | None = None,
        tls: "Pki | None" = None,
        extra: tuple[str, ...] = (),
    ) -> ServedGateway:
        """`callers` maps caller names to bearer tokens the gateway accepts
        (their SHA-256 goes into --auth-tokens-file); without it the gateway
        serves anyone (--allow-unauthenticated). `extra` are more flags."""
        grpc_port, admin_port = free_ports(2)
        grpc_port = port or grpc_port
        tokens_file = tmp_path / f"client-tokens-{len(started)}.json"
        tokens_file.write_text(json.dumps(tokens))
        if callers is None:
            access = ["--allow-unauthenticated"]
        else:
            digests = tmp_path / f"callers-{len(started)}.json"
            digests.write_text(
                json.dumps({name: hashlib.sha256(token.encode()).hexdigest() for name, token in callers.items()})
            )
            access = ["--auth-tokens-file", str(digests), "--auth-reload", "100ms"]
        if tls is not None:
            # Client certificates are a way in: the gateway needs no other.
            access = [a for a in access if a != "--allow-unauthenticated"]
            access += ["--tls-cert-file", str(tls.server_cert), "--tls-key-file", str(tls.server_key),
                       "--tls-client-ca-file", str(tls.ca)]  # fmt: skip
        env = {**_clean_env(), **standalone_emulator.aws_env}
        # No other credentials source, no instance metadata, no profiles.
        env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
                   AWS_SHARED_CREDENTIALS_FILE=os.devnull)  # fmt: skip
        process, _, stderr_lines = _start(
            [
                str(gateway_binary), "serve",
                "--listen", f"{host}:{grpc_port}",
                "--admin-listen", f"{host}:{admin_port}",
                "--client-tokens-file", str(tokens_file),
                "--shutdown-delay", "0s", "--shutdown-grace", "1s",
                *access, *extra,
            ],
            env,
            "gateway listening",
            "codepipeline-gateway serve",
        )  # fmt: skip
        started.append(process)
        return ServedGateway(f"{host}:{grpc_port}", stderr_lines)

    yield start
    for process in started:
        _stop(process)


@pytest.fixture
def emulator(dev: DevGateway) -> Emulator:
    """The emulator, with no pending faults and an empty request log."""
    dev.emulator.clear_faults()
    dev.emulator.clear_requests()
    yield dev.emulator
    dev.emulator.clear_faults()


@dataclass
class WorkerRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


@pytest.fixture(scope="session")
def python_stubs() -> None:
    """Generates the Python worker's stubs (build output, not committed)."""
    subprocess.run(
        [sys.executable, str(PYTHON_WORKER / "generate_stubs.py")],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def node_modules() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH")
    if not (NODE_WORKER / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("examples/node-worker/node_modules is missing: run `npm ci` there first")


@pytest.fixture(scope="session")
def go_worker() -> Path:
    if not GO_WORKER_BINARY.is_file():
        pytest.fail(f"{GO_WORKER_BINARY} is missing: run `bash scripts/go-worker.sh` first")
    return GO_WORKER_BINARY


WORKERS = ["python", "node", "go"]


@pytest.fixture(params=WORKERS)
def worker(request, dev: DevGateway):
    """Runs one example worker against the dev gateway: worker(*args) -> WorkerRun."""
    if request.param == "python":
        request.getfixturevalue("python_stubs")
        command = [sys.executable, str(PYTHON_WORKER / "worker.py")]
    elif request.param == "node":
        request.getfixturevalue("node_modules")
        command = ["node", str(NODE_WORKER / "worker.js")]
    else:
        command = [str(request.getfixturevalue("go_worker"))]

    env = {k: v for k, v in os.environ.items() if not k.startswith("CPGW_")}
    for name in ("JOB_ID", "PARTNER_JOB_ID", "CLIENT_TOKEN", "CONTINUATION_TOKEN"):
        env.pop(name, None)

    def argv(args, target, extra_env):
        if extra_env and "CPGW_TARGET" in extra_env and target is None:
            return [*command, *args]
        return [*command, "--target", target or dev.grpc_target, *args]

    def run(*args: str, target: str | None = None, extra_env: dict[str, str] | None = None) -> WorkerRun:
        """Runs the worker with `args` against `target` (default: the dev
        gateway) unless extra_env sets CPGW_TARGET."""
        completed = subprocess.run(
            argv(args, target, extra_env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            env={**env, **(extra_env or {})},
        )
        return WorkerRun(completed.returncode, completed.stdout, completed.stderr)

    def start(*args: str, target: str | None = None) -> subprocess.Popen:
        """Starts the worker in the background; finish it with finish()."""
        return subprocess.Popen(
            argv(args, target, None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def finish(process: subprocess.Popen) -> WorkerRun:
        try:
            stdout, stderr = process.communicate(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        return WorkerRun(process.returncode, stdout, stderr)

    run.language = request.param
    run.target = dev.grpc_target
    run.start = start
    run.finish = finish
    return run


@dataclass
class Pki:
    """A CA, the gateway's certificate (127.0.0.1, localhost), and a worker's
    client certificate with a SPIFFE ID, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key, issuer_name, issuer_key, *, ca=False, sans=(), usage=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )  # fmt: skip
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(name: str, data: bytes) -> Path:
        path = directory / name
        path.write_bytes(data)
        return path

    def pem_key(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "examples CA")])
    ca = certificate("examples CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate(
        "gateway", server_key, ca_name, ca_key,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )  # fmt: skip
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = certificate(
        "worker", client_key, ca_name, ca_key,
        sans=[x509.UniformResourceIdentifier("spiffe://example.org/ns/ci/sa/worker")],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    encoding = serialization.Encoding.PEM
    return Pki(
        ca=write("ca.pem", ca.public_bytes(encoding)),
        server_cert=write("server.pem", server.public_bytes(encoding)),
        server_key=write("server-key.pem", pem_key(server_key)),
        client_cert=write("client.pem", client.public_bytes(encoding)),
        client_key=write("client-key.pem", pem_key(client_key)),
    )
