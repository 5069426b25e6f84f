"""The worker config file: precedence, values, and errors that name the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_topology import ConfigError, Phase, PoolSettings
from broker_topology.units import GiB, KiB, format_cpus
from pool_worker import config_file, preflight
from pool_worker.config_file import key_lines, load, locate
from pool_worker.config_parts import ExternalConfig, SimulatedConfig
from pool_worker.cpus import parse_cpus
from pool_worker.storage import Storage

GOOD = """\
# a worker with two kinds of slot
name = "w-{n}"
data_dir = "data"
storage_group = "rack-a"
sector_sizes = ["2KiB", "32GiB"]

[[slots]]
phases = ["ap", "pc1"]
cores = "0"
memory = "64GiB"

[[slots]]
phases = "pc2,c1,c2,fin"
temp_dir = "fast/{name}"
keep_free = "1GiB"

[executors.pc2]
kind = "external"
command = ["bin/pc2", "--json"]
timeout = "2h"
env = { FIL_PROOFS_USE_GPU_COLUMN_BUILDER = "1", API_TOKEN = "s3cret" }

[executors.c2]
kind = "simulated"
duration = "3s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _no_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SEALPOOL_WORKER_SLOTS", "SEALPOOL_WORKER_IDLE_POLL", "SEALPOOL_WORKER_NAME",
                "SEALPOOL_WORKER_PHASES", "SEALPOOL_WORKER_GPU"):
        monkeypatch.delenv(var, raising=False)


def test_file_values_are_read_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg, _ = load(write(tmp_path, GOOD.replace("{n}", "1")), {})
    assert cfg.name == "w-1" and cfg.storage_group == "rack-a"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.sector_sizes == (2 * KiB, 32 * GiB)
    # without top-level phases, the worker serves the union of its slots' phases
    assert cfg.phases == frozenset(Phase)
    first, second = cfg.slots
    assert first.phases == frozenset({Phase.AP, Phase.PC1}) and first.cores == (0,)
    assert first.memory == 64 * GiB and first.temp_dir is None
    assert second.phases == frozenset({Phase.PC2, Phase.C1, Phase.C2, Phase.FIN})
    assert second.keep_free == GiB
    pc2 = cfg.executors[Phase.PC2]
    assert isinstance(pc2, ExternalConfig)
    assert pc2.command == (str(tmp_path / "bin/pc2"), "--json") and pc2.timeout == 7200
    assert isinstance(cfg.executors[Phase.C2], SimulatedConfig)
    # {name} expands per machine: one file for identical hosts
    storage = Storage.from_config(cfg)
    assert storage.temp_dirs == (cfg.temp_dir, tmp_path / "fast/w-1")
    assert cfg.temp_dir.parent.parent == tmp_path / "data"
    assert storage.configured == {tmp_path / "fast/w-1"}


def test_flags_override_environment_overrides_file_overrides_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'slots = 3\nidle_poll = "2s"\nlease_ttl = "90s"\nname = "f"\n')
    monkeypatch.setenv("SEALPOOL_WORKER_IDLE_POLL", "3")
    monkeypatch.setenv("SEALPOOL_WORKER_SLOTS", "4")
    cfg, _ = load(path, {"slots": 1, "name": None})
    assert len(cfg.slots) == 1  # flag beats environment and file
    assert cfg.idle_poll == 3  # environment beats file
    assert cfg.lease_ttl == 90  # file beats default
    assert cfg.drain_timeout == 600  # default
    assert cfg.name == "f"  # a flag left unset does not hide the file


@pytest.mark.parametrize(("text", "where", "needle"), [
    ('name = "ok"\nslotz = 2\n', ":2: slotz", "unknown key"),
    ('[[slots]]\ncores = "0"\n\n[[slots]]\ncorez = "1"\n', ":5: slots[1].corez", "unknown key"),
    ('[[slots]]\nphases = ["pc1"]\ncores = "3-1"\n', ":3: slots[0].cores", "bad CPU range"),
    ('[[slots]]\nmemory = "lots"\n', ":2: slots[0].memory", "cannot read 'lots' as a size"),
    ('sector_sizes = ["3KiB"]\n', ":1: sector_sizes", "unknown sector size"),
    ('phases = "pc1,pc9"\n', ":1: phases", "pc9"),
    ('[executors.pc2]\nkind = "external"\ncommand = []\n', ":3: executors.pc2.command",
     "at least 1"),
    ('[executors.pc2]\nkind = "magic"\n', ":1: executors.pc2", "kind"),
    ('[executors.pc9]\nkind = "simulated"\n', ":1: executors.pc9", "pc1"),
    ('\n\nname = "a b"\n', ":3: name", "pattern"),
])
def test_a_bad_value_names_the_key_and_its_line(tmp_path: Path, text: str, where: str,
                                                 needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load(path, {})
    message = str(exc.value)
    assert message.startswith(f"{path}{where}: "), message
    assert needle in message and "\n" not in message


def test_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "a"\n\nslots = [\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3: not valid TOML"):
        load(path, {})


def test_errors_from_flags_and_environment_name_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^--slots: must be between 1 and 256"):
        load(None, {"slots": 0})
    monkeypatch.setenv("SEALPOOL_WORKER_IDLE_POLL", "soon")
    with pytest.raises(ConfigError, match=r"^SEALPOOL_WORKER_IDLE_POLL: cannot read 'soon'"):
        load(write(tmp_path, 'idle_poll = "1s"\n'), {})


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--config .*nope.toml: No such file"):
        load(tmp_path / "nope.toml", {})


def test_key_lines_follow_tables_arrays_and_dotted_keys() -> None:
    text = ('a = 1\n[t]\nx.y = 2\n[[arr]]\nk = 1\n[[arr]]\n[arr.sub]\nq = "a = b"\n'
            's = """\nfake = 1\n"""\nafter = 3\n')
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("t", "x", "y")] == 3
    assert lines[("arr", 0, "k")] == 5 and lines[("arr", 1)] == 6
    assert lines[("arr", 1, "sub", "q")] == 8
    assert ("arr", 1, "sub", "fake") not in lines  # inside a multi-line string
    assert lines[("arr", 1, "sub", "after")] == 12
    assert locate(text, ("arr", 1, "sub", "q", 0)) == 8  # nearest enclosing key


def test_effective_config_masks_secrets(tmp_path: Path) -> None:
    cfg, _ = load(write(tmp_path, GOOD.replace("{n}", "1")), {})
    pool = PoolSettings(amqp_url="amqp://sealer:hunter2@mq.example:5672/%2F",
                        redis_url="redis://:redispw@127.0.0.1:6379/0")
    text = config_file.effective(pool, cfg)
    assert "hunter2" not in text and "redispw" not in text and "s3cret" not in text
    assert "amqp://sealer:***@mq.example:5672/%2F" in text
    assert '"FIL_PROOFS_USE_GPU_COLUMN_BUILDER": "1"' in text
    assert 'slots[1] = {"phases": ["c1", "c2", "fin", "pc2"]' in text


def test_cpu_lists() -> None:
    assert parse_cpus("0-3, 8,10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpus([3, 1, 1]) == (1, 3) and parse_cpus(2) == (2,)
    assert format_cpus((0, 1, 2, 3, 8, 10, 11)) == "0-3,8,10-11"
    for bad in ("a", "4-2", [-1], [True]):
        with pytest.raises(ValueError):
            parse_cpus(bad)


# -- preflight: the config against this machine -------------------------------------------

def check(tmp_path: Path, text: str, flags: dict[str, object] | None = None) -> None:
    cfg, source = load(write(tmp_path, text), flags or {})
    preflight.check(cfg, source, Storage.from_config(cfg))


def test_preflight_accepts_a_good_config_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "fast").mkdir()
    check(tmp_path, 'name = "w"\ndata_dir = "d"\n[[slots]]\ncores = "0"\n'
                    '[[slots]]\ntemp_dir = "fast"\n')
    assert not (tmp_path / "d").exists()  # the defaults are created when the worker starts


@pytest.mark.parametrize(("text", "where", "needle"), [
    ('[[slots]]\ntemp_dir = "missing"\n', ":2: slots[0].temp_dir", "does not exist"),
    ('[[slots]]\n\ntemp_dir = "afile"\n', ":3: slots[0].temp_dir", "is not a directory"),
    ('sealed_dir = "gone/{name}"\n', ":1: sealed_dir", "does not exist"),
    ('[[slots]]\ncores = "0,4095"\n', ":2: slots[0].cores", "CPU 4095 not on this machine"),
    ('phases = "pc1"\n[[slots]]\nphases = ["pc1", "pc2"]\n', ":3: slots[0].phases",
     "pc2 not among the worker's phases"),
    ('phases = "pc1,pc2"\n[[slots]]\nphases = ["pc1"]\n', ":1: phases", "pc2 served by no slot"),
    ('[executors.pc2]\nkind = "external"\ncommand = ["no-such-prog-xyz"]\n',
     ":3: executors.pc2.command", "not found on PATH"),
    ('[executors.pc2]\nkind = "external"\ncommand = ["./nope.sh"]\n',
     ":3: executors.pc2.command", "does not exist"),
])
def test_preflight_refuses_with_the_key_and_line(tmp_path: Path, text: str, where: str,
                                                 needle: str) -> None:
    (tmp_path / "afile").write_text("")
    path = tmp_path / "worker.toml"
    with pytest.raises(ConfigError) as exc:
        check(tmp_path, f'data_dir = "{tmp_path}/d"\n' + text)
    message = str(exc.value)
    line = int(where.split(":")[1]) + 1  # the data_dir line is prepended
    assert message.startswith(f"{path}:{line}:{where.split(':', 2)[2]}: "), message
    assert needle in message


def test_preflight_names_the_gpu_flag(tmp_path: Path) -> None:
    from pool_worker import gpu

    try:
        gpu.probe([0])
        index, needle = 999, "GPU 999 does not exist"
    except gpu.GpuUnavailable:
        index, needle = 0, "no NVIDIA driver on this machine"
    with pytest.raises(ConfigError, match=rf"^--gpu: {needle}"):
        check(tmp_path, f'data_dir = "{tmp_path}/d"\n', {"gpu": index})


class FakeNvml:
    """Two GPUs, for the paths this machine (no driver) cannot take."""

    class NVMLError(Exception):
        pass

    @staticmethod
    def nvmlInit() -> None: ...

    @staticmethod
    def nvmlShutdown() -> None: ...

    @staticmethod
    def nvmlDeviceGetCount() -> int:
        return 2

    @staticmethod
    def nvmlDeviceGetHandleByIndex(i: int) -> int:
        return i

    @staticmethod
    def nvmlDeviceGetName(h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    @staticmethod
    def nvmlDeviceGetMemoryInfo(h: int) -> object:
        return type("Mem", (), {"total": 80 * GiB})()


def test_gpu_index_and_description(monkeypatch: pytest.MonkeyPatch) -> None:
    from pool_worker import gpu

    monkeypatch.setattr(gpu, "_nvml", lambda: FakeNvml)
    with pytest.raises(gpu.GpuUnavailable,
                       match=r"^GPU 3 does not exist \(this machine has 2 GPUs: 0, 1\)$"):
        gpu.probe([1, 3])
    info = gpu.probe([1])[1]
    assert (info.index, info.name, info.memory) == (1, "NVIDIA H100 80GB HBM3", 80 * GiB)
    assert gpu.executor_env(1) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                                   "CUDA_VISIBLE_DEVICES": "1"}
    assert gpu.executor_env(None) == {}


def test_the_readme_example_config_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("```toml\n# worker.toml")[1].split("```")[0]
    cfg, _ = load(write(tmp_path, "# worker.toml" + block), {})
    assert len(cfg.slots) == 3 and cfg.slots[2].gpu == 0
    assert cfg.sector_sizes == (32 * GiB,) and cfg.storage_group == "rack-a"
    assert isinstance(cfg.executors[Phase.PC2], ExternalConfig)
