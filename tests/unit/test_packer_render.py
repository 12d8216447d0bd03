"""The Packer template renders from plain settings into a valid, formatted HCL2 file."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from box import package
from box.buildinfo import BuildMetadataError, parse_build_metadata
from box.packer import (
    LIMITS,
    PACKER_DIR,
    BoxSettings,
    PackerSettings,
    hcl_quote,
    render_libvirt_vagrantfile,
    render_template,
)

GOLDEN = Path(__file__).parent / "golden" / "registry-cache.pkr.hcl"


def settings(root: Path = Path("/build"), **box) -> PackerSettings:
    return PackerSettings(
        box=BoxSettings(version="1.2.3", **box),
        base_image=str(root / "base/debian-bookworm-0123456789abcdef.raw"),
        accelerator="tcg",
        output_dir=str(root / "packer/output"),
        serial_log=str(root / "packer/serial.log"),
        libvirt_box=str(root / "packer/registry-cache-1.2.3-libvirt.box"),
        libvirt_vagrantfile=str(root / "packer/Vagrantfile.libvirt"),
        payload=str(root / "payload.tar"),
        scripts_dir="/src/packer/scripts",
    )


def test_rendered_template_matches_the_golden_file():
    rendered = render_template(settings())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 after an intended change"


def test_template_keeps_packers_own_placeholders_and_leaves_no_jinja():
    rendered = render_template(settings())
    assert "{{ .SSHHostPort }}" in rendered
    assert "{{ .Path }}" in rendered
    assert "[[" not in rendered and "[%" not in rendered


def test_every_provisioning_script_runs_in_order_and_exists():
    rendered = render_template(settings())
    scripts = sorted(p.name for p in (PACKER_DIR / "scripts").glob("*.sh"))
    positions = [rendered.index(f"/src/packer/scripts/{name}") for name in scripts]
    assert positions == sorted(positions)


def test_settings_reach_the_template():
    rendered = render_template(settings(memory=2048, cpus=4, disk_size="8G"))
    assert "default     = 2048\n" in rendered
    assert "default     = 4\n" in rendered
    assert 'default     = "8G"' in rendered


def test_hcl_quote_escapes_hcl_interpolation():
    assert hcl_quote("a${b}%{c}") == '"a$${b}%%{c}"'
    assert hcl_quote(["x=1", 'y="2"']) == '["x=1", "y=\\"2\\""]'


def test_libvirt_vagrantfile_sets_memory_and_cpus():
    text = render_libvirt_vagrantfile(BoxSettings(version="1.2.3", memory=2048, cpus=3))
    assert "libvirt.memory = 2048" in text
    assert "libvirt.cpus = 3" in text


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("name", "Bad Name", "--name"),
        ("version", "v1", "--version"),
        ("memory", 128, "--memory"),
        ("cpus", 0, "--cpus"),
        ("disk_size", "20", "--disk-size"),
        ("disk_size", "2G", "--disk-size"),
    ],
)
def test_bad_box_settings_are_named_with_their_flag(field, value, flag):
    problems = BoxSettings(**{field: value}).problems()
    assert len(problems) == 1
    assert problems[0].startswith(flag)


def test_good_box_settings_have_no_problem():
    assert BoxSettings(version="0.1.0", disk_size="8192M").problems() == []


@pytest.mark.allow_subprocess
def test_packer_validates_and_formats_the_rendered_template(tmp_path):
    if shutil.which("packer") is None:
        pytest.skip("packer is not installed (invoke install-deps --groups build)")
    (tmp_path / "payload.tar").write_bytes(b"")
    scripts = str(PACKER_DIR / "scripts")
    rendered = render_template(PackerSettings(**{**settings(tmp_path).__dict__,
                                                 "scripts_dir": scripts}))
    (tmp_path / "packer").mkdir()
    (tmp_path / "packer" / "Vagrantfile.libvirt").write_text("# empty\n")
    template = tmp_path / "box.pkr.hcl"
    template.write_text(rendered)
    for argv in (["packer", "fmt", "-check", template.name], ["packer", "validate", template.name]):
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"


def test_build_task_refuses_bad_flags_before_any_work():
    from invoke import Context
    from invoke.exceptions import Exit

    from box.tasks.build import box_settings

    with pytest.raises(Exit, match="--memory"):
        box_settings(Context(), version="1.0.0", memory="lots")
    with pytest.raises(Exit, match="--cpus 0"):
        box_settings(Context(), version="1.0.0", cpus=0)
    with pytest.raises(Exit, match="--disk-size"):
        box_settings(Context(), version="1.0.0", disk_size="1T")


def test_project_version_is_read_from_the_agent_source(tmp_path):
    from invoke.exceptions import Exit

    from box.tasks.build import project_version

    init = tmp_path / "__init__.py"
    init.write_text('"""doc"""\n\n__version__ = "2.3.4"\n')
    assert project_version(init) == "2.3.4"
    init.write_text("VERSION = 1\n")
    with pytest.raises(Exit, match="__version__"):
        project_version(init)


@pytest.mark.parametrize(("flag", "value"), [("version", "1a"), ("name", "a..b")])
def test_build_refuses_before_any_work_what_test_box_and_publish_would_refuse(flag, value):
    # BoxSettings.problems is what build-box checks first (box_settings): no box gets built
    problems = BoxSettings(**{flag: value}).problems()
    assert len(problems) == 1
    assert problems[0].startswith(f"--{flag} {value!r}: ")


@pytest.mark.parametrize(
    ("name", "version"),
    [("registry-cache", "1.0.0"), ("acme/registry-cache", "1.2.0.rc1"), ("Cache", "1.0-rc.1"),
     ("a..b", "1.0.0"), ("acme/x/y", "1.0.0"), ("-x", "1.0.0"), ("x" * 64, "1.0.0"),
     ("rc", "1a"), ("rc", "v1"), ("rc", " 1.0"), ("rc", "1..0"), ("rc", "1.0.0.0.0")],
)
def test_build_and_build_json_accept_the_same_names_and_versions(name, version):
    data = {"name": name, "version": version, "git_revision": "abc", "git_dirty": False,
            "created": "2024-05-01T12:00:00Z",
            "boxes": [{"provider": "libvirt", "file": "x.box", "sha256": "a" * 64, "size": 1}]}
    try:
        parse_build_metadata(data, "build.json")
        published = True
    except BuildMetadataError:
        published = False
    assert (BoxSettings(name=name, version=version).problems() == []) == published


def test_an_org_box_name_names_the_files_after_the_box():
    assert settings(name="acme/cache").disk_file() == "cache.qcow2"
    assert package.box_file_name("acme/cache", "1.0.0", "libvirt") == "cache-1.0.0-libvirt.box"


@pytest.mark.allow_subprocess
def test_packers_validation_accepts_exactly_what_python_accepts(tmp_path):
    if shutil.which("packer") is None:
        pytest.skip("packer is not installed (invoke install-deps --groups build)")
    (tmp_path / "payload.tar").write_bytes(b"")
    (tmp_path / "packer").mkdir()
    (tmp_path / "packer" / "Vagrantfile.libvirt").write_text("# empty\n")
    template = tmp_path / "box.pkr.hcl"
    template.write_text(render_template(PackerSettings(**{
        **settings(tmp_path).__dict__, "scripts_dir": str(PACKER_DIR / "scripts")})))
    low_mem, high_mem = LIMITS.memory_mib
    low_cpus, high_cpus = LIMITS.cpus
    cases = [("memory", low_mem - 1), ("memory", low_mem), ("memory", high_mem),
             ("memory", high_mem + 1), ("cpus", low_cpus - 1), ("cpus", low_cpus),
             ("cpus", high_cpus), ("cpus", high_cpus + 1),
             ("disk_size", f"{LIMITS.disk_mib_min - 1}M"), ("disk_size", f"{LIMITS.disk_mib_min}M"),
             ("disk_size", f"{LIMITS.disk_mib_min // 1024}G"),
             ("disk_size", f"{LIMITS.disk_mib_min // 1024 - 1}G"), ("disk_size", "20G"),
             ("disk_size", "08G"), ("disk_size", "20"), ("disk_size", "20MG"), ("disk_size", "G"),
             ("disk_size", "-8G"), ("disk_size", "8T")]
    disagree = []
    for field, value in cases:
        python_ok = BoxSettings(**{field: value}).problems() == []
        proc = subprocess.run(["packer", "validate", "-var", f"{field}={value}", template.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        if (proc.returncode == 0) != python_ok:
            disagree.append(f"{field}={value}: python {python_ok}, packer {proc.returncode == 0}")
    assert disagree == []
