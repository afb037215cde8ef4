"""The recipes people copy (containers/recipes, shown in mock-chart-img/README.md): they parse, and the port, health
command, variables and paths they name are the images' own (read from `podman image inspect`, the binaries' --help
and the Containerfiles). The README shows each recipe verbatim."""

import ast
import os
import re
import shlex
import subprocess

import yaml

from conftest import REPO

RECIPES = os.path.join(REPO, "containers", "recipes")
MOCK_FILE = os.path.join(REPO, "containers", "mock-chart-img.Containerfile")
RECORDER_FILE = os.path.join(REPO, "containers", "recorder-proxy.Containerfile")


def read(name):
    return open(os.path.join(RECIPES, name)).read()


def repo_of(ref):
    return ref.rsplit(":", 1)[0]


def check_env(env, known, where):
    unknown = set(env) - known
    assert not unknown, f"{where} sets variables the image does not read: {unknown}"


def check_mounts(volumes, image, containerfile, where):
    points = image.mount_points(containerfile)
    for v in volumes:
        target = v.split(":")[1]
        assert any(target == p or target.startswith(p + "/") for p in points), f"{where}: {target} not in {points}"


def test_compose_file(mock_image, recorder_image):
    doc = yaml.safe_load(read("compose.yaml"))
    mock = doc["services"]["mock-chart-img"]
    assert mock["image"] == mock_image.ref
    assert mock["healthcheck"]["test"] == mock_image.healthcheck
    assert [p.split(":")[1] for p in mock["ports"]] == [str(mock_image.port())]
    check_env(mock["environment"], mock_image.variables(), "compose mock-chart-img")
    check_mounts(mock["volumes"], mock_image, MOCK_FILE, "compose mock-chart-img")

    proxy = doc["services"]["recorder-proxy"]
    assert proxy["image"] == recorder_image.ref
    assert proxy["healthcheck"]["test"] == recorder_image.healthcheck
    assert [p.split(":")[1] for p in proxy["ports"]] == [str(recorder_image.port())]
    check_env(proxy["environment"], recorder_image.variables("proxy"), "compose recorder-proxy")
    check_mounts(proxy["volumes"], recorder_image, RECORDER_FILE, "compose recorder-proxy")
    assert proxy["environment"]["RECORDER_PROXY_UPSTREAM"] == f"http://mock-chart-img:{mock_image.port()}"
    # The waits are on health, not on start.
    for name in ("recorder-proxy", "tests"):
        assert doc["services"][name]["depends_on"]["mock-chart-img"]["condition"] == "service_healthy"


def test_github_actions_services_block(mock_image):
    doc = yaml.safe_load(read("github-actions.yml"))
    job = doc["jobs"]["test"]
    service = job["services"]["mock-chart-img"]
    assert repo_of(service["image"]).endswith("/mock-chart-img")
    assert [p.split(":")[1] for p in service["ports"]] == [str(mock_image.port())]
    check_env(service["env"], mock_image.variables(), "GitHub Actions service")
    options = shlex.split(service["options"])
    assert options[options.index("--health-cmd") + 1] == " ".join(mock_image.healthcheck[1:])
    assert job["env"]["CHART_IMG_BASE_URL"].endswith(f":{mock_image.port()}")


def test_testcontainers_python_snippet(mock_image):
    tree = ast.parse(read("testcontainers_mock.py"))
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, int)}
    assert mock_image.ref in strings
    assert '"message":"ready"' in strings
    assert mock_image.port() in numbers
    env_names = {s for s in strings if re.fullmatch(r"[A-Z][A-Z0-9_]+", s)}
    assert env_names and env_names <= mock_image.variables(), env_names


def test_testcontainers_rust_image_matches(mock_image):
    src = open(os.path.join(REPO, "mock-chart-img", "src", "testcontainers.rs")).read()
    assert f'"{repo_of(mock_image.ref)}"' in src and f'"{mock_image.ref.rsplit(":", 1)[1]}"' in src
    assert f"pub const PORT: u16 = {mock_image.port()};" in src
    assert 'r#""message":"ready""#' in src


def test_cloud_run_deploy(mock_image):
    script = read("cloud-run-deploy.sh")
    subprocess.run(["bash", "-n", os.path.join(RECIPES, "cloud-run-deploy.sh")], check=True)
    words = shlex.split(script.replace("\\\n", " "), comments=True)
    assert words[words.index("--port") + 1] == str(mock_image.port())
    names = set()
    for flag in ("--set-env-vars", "--set-secrets"):
        names |= {pair.split("=")[0] for pair in words[words.index(flag) + 1].split(",")}
    assert {"MOCK_CHART_IMG_KEYS", "MOCK_CHART_IMG_ADMIN_TOKEN"} <= names
    check_env(names, mock_image.variables(), "gcloud run deploy")
    assert "podman push localhost/mock-chart-img:dev" in script


def test_the_readme_shows_each_recipe_verbatim():
    readme = open(os.path.join(REPO, "mock-chart-img", "README.md")).read()
    for name in ("compose.yaml", "github-actions.yml", "testcontainers_mock.py", "cloud-run-deploy.sh"):
        marker = f"<!-- recipe: containers/recipes/{name} -->"
        assert marker in readme, f"the README does not show {name}"
        block = readme.split(marker, 1)[1].split("```", 2)[1]
        shown = block.split("\n", 1)[1]
        assert shown == read(name), f"the README's copy of {name} differs from the file"
    assert "docker run -p 8080:8080 -e MOCK_CHART_IMG_KEYS=ci-key:PRO" in readme
