"""The static binary (scripts/build-static) and the container image built from it with buildah
(Dockerfile, stage `prebuilt`): static, starts, answers /-/healthy, and the image's config and
filesystem are what the Dockerfile promises."""
import json
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import ROOT, free_port, lookout_bin, required_env, run, wait_http

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
IMAGE = "localhost/lookout:deploy-test"


def cargo_version():
    return re.search(r'^version\s*=\s*"([^"]+)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)


def rootfs():
    path = required_env("LOOKOUT_ROOTFS")
    assert os.path.basename(path) == "rootfs", "the build context is the directory holding rootfs/"
    return path


def start(cmd, port, **kw):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/healthy", proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("lookout did not stop within 30 s of SIGTERM")
    assert code == 0, f"lookout exited {code} on SIGTERM:\n{proc.stdout.read()}"


# ---------------------------------------------------------------- the binary -------------------


def test_binary_is_static():
    headers = run(["readelf", "-lW", lookout_bin()]).stdout
    assert "Requesting program interpreter" not in headers
    assert "(NEEDED)" not in run(["readelf", "-dW", lookout_bin()]).stdout


def test_binary_starts_and_answers_healthy():
    port = free_port()
    proc = start([lookout_bin(), f"--config.file={ROOT}/config/lookout.yml",
                  f"--web.listen-address=127.0.0.1:{port}"], port)
    try:
        assert wait_http(f"http://127.0.0.1:{port}/-/healthy").strip() == "Healthy"
        metrics = wait_http(f"http://127.0.0.1:{port}/metrics")
        rustc = run(["rustc", "--version"]).stdout.split()[1]
        m = re.search(r'^lookout_build_info\{revision="([^"]*)",rustversion="([^"]*)",version="([^"]*)"\} 1$', metrics, re.M)
        assert m, "lookout_build_info missing"
        assert m.group(2) == rustc and m.group(3) == cargo_version()
        assert m.group(1) != "", "build-static sets LOOKOUT_REVISION"
    finally:
        stop(proc)


def test_rootfs_holds_binary_config_certificates_and_user():
    root = rootfs()
    binary = os.path.join(root, "usr/local/bin/lookout")
    assert os.access(binary, os.X_OK)
    assert "(NEEDED)" not in run(["readelf", "-dW", binary]).stdout
    assert open(os.path.join(root, "etc/lookout/lookout.yml")).read() == open(os.path.join(ROOT, "config/lookout.yml")).read()
    assert "BEGIN CERTIFICATE" in open(os.path.join(root, "etc/ssl/certs/ca-certificates.crt")).read()
    assert "lookout:x:65532:65532:" in open(os.path.join(root, "etc/passwd")).read()
    p = run([binary, "--config.check", f"--config.file={root}/etc/lookout/lookout.yml"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------- the image --------------------


@pytest.fixture(scope="module")
def buildah(tmp_path_factory):
    """buildah with its own vfs storage under a temporary directory, removed afterwards."""
    if not shutil.which("buildah"):
        pytest.fail("buildah is missing: scripts/test-deploy installs Debian's buildah")
    if os.geteuid() != 0:
        pytest.fail("building and entering the image needs root (buildah's vfs storage, chroot); CI runs as root")
    store = tmp_path_factory.mktemp("buildah")
    base = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs"]

    def b(*args, check=True):
        return run([*base, *args], check=check)

    yield b
    b("umount", "--all", check=False)
    b("rm", "--all", check=False)
    b("rmi", "--all", "--force", check=False)
    shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="module")
def image(buildah):
    context = os.path.dirname(rootfs())
    revision = run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], check=False).stdout.strip() or "unknown"
    buildah("bud", "--isolation", "chroot", "--pull-never", "--target", "prebuilt", "-f", DOCKERFILE,
            "--build-arg", f"VERSION={cargo_version()}", "--build-arg", f"REVISION={revision}",
            "-t", IMAGE, context)
    info = json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)
    return {"config": info["OCIv1"]["config"], "revision": revision}


def test_image_config(image):
    c = image["config"]
    assert c["User"] == "65532:65532"
    assert c["Entrypoint"] == ["/usr/local/bin/lookout", "--config.file=/etc/lookout/lookout.yml",
                               "--storage.path=/var/lib/lookout"]
    assert c.get("Cmd") in (None, [])
    assert set(c["ExposedPorts"]) == {"9115/tcp"}
    labels = c["Labels"]
    assert labels["org.opencontainers.image.title"] == "lookout"
    assert labels["org.opencontainers.image.version"] == cargo_version()
    assert labels["org.opencontainers.image.revision"] == image["revision"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_image_runs_from_its_own_filesystem_as_its_user(image, buildah, tmp_path):
    """The image's entrypoint, as the image's user, with nothing but the image's files mounted
    read-only (as the chart runs it: readOnlyRootFilesystem): it starts, answers /-/healthy, and
    probes."""
    ctr = buildah("from", "--pull-never", IMAGE).stdout.strip()
    mnt = buildah("mount", ctr).stdout.strip()
    files = sorted(os.path.relpath(os.path.join(d, f), mnt) for d, _, fs in os.walk(mnt) for f in fs)
    assert files == ["etc/group", "etc/lookout/lookout.yml", "etc/passwd",
                     "etc/ssl/certs/ca-certificates.crt", "usr/local/bin/lookout"]
    port = free_port()
    user = image["config"]["User"]
    ro = tmp_path / "root"
    ro.mkdir()
    entry = " ".join(image["config"]["Entrypoint"])
    # A private mount namespace: a read-only bind of the image's filesystem, then chroot into it.
    # The history store's directory gets a writable tmpfs, as the chart's emptyDir.
    script = (f"mount --bind {mnt} {ro} && mount -o remount,bind,ro {ro} && "
              f"mount -t tmpfs -o uid=65532,gid=65532,mode=0750 tmpfs {ro}/var/lib/lookout && "
              f"exec chroot --userspec={user} {ro} {entry} --web.listen-address=127.0.0.1:{port}")
    proc = start(["unshare", "--mount", "sh", "-c", script], port)
    try:
        body = wait_http(f"http://127.0.0.1:{port}/probe?module=http_2xx&target=http://127.0.0.1:{port}/-/healthy")
        assert re.search(r"^probe_success 1$", body, re.M), body
        # The process is lookout itself, running as the image's user, not root.
        status = open(f"/proc/{proc.pid}/status").read()
        assert re.search(r"^Name:\s+lookout$", status, re.M), status
        assert re.search(r"^Uid:\s+65532\s", status, re.M), status
        assert os.readlink(f"/proc/{proc.pid}/root") == str(ro)
    finally:
        stop(proc)
        buildah("umount", ctr)
        buildah("rm", ctr)


def test_dockerfile_builds_with_the_ci_script():
    """Only the prebuilt stage can be built here (no registry): check that the default stage
    compiles with the same script CI runs, on a Rust image, and copies its root filesystem."""
    text = open(DOCKERFILE).read()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    names = [s[1] for s in stages]
    assert names == ["base", "prebuilt", "builder", "runtime"], names
    assert stages[0][0] == "scratch"
    assert re.fullmatch(r"docker\.io/library/rust:\$\{RUST_VERSION\}-bookworm", stages[2][0])
    assert re.search(r"^RUN .*scripts/build-static --rootfs /rootfs$", text, re.M)
    assert text.rstrip().endswith("COPY --from=builder /rootfs/ /")
    assert re.search(r"^USER 65532:65532$", text, re.M) and re.search(r"^EXPOSE 9115$", text, re.M)
    m = re.search(r"^ARG RUST_VERSION=(\d+\.\d+)$", text, re.M)
    toolchain = run(["rustc", "--version"]).stdout.split()[1]
    assert toolchain.startswith(m.group(1) + "."), "the builder image's Rust is the one CI tests with"
