"""Real PC1 through the pool: ap and pc1 on the labeler_c kernel, bit-exact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import labeler_c
from labeler_c import reference
from pool_worker.executors.labeler import layers_for, prover_id

from .conftest import Pool
from .test_failures import assert_each_phase_accepted_once

pytestmark = pytest.mark.integration
SMALL = {"SEALPOOL_WORKER_SECTOR_SIZES": "2KiB,8MiB"}


def test_2kib_and_8mib_sectors_seal_with_real_pc1(pool: Pool) -> None:
    # Given a worker whose ap and pc1 run on the C kernel (later phases simulated), taking
    # the sizes this machine has memory for (resources are checked for the largest one)
    pool.worker("w", slots=2, kernel=True, env=SMALL)
    pool.miner("t01000")
    small = pool.enqueue("t01000", 1, "cc", "--size", "2KiB")[0]
    big = pool.enqueue("t01000", 1, "cc", "--size", "8MiB")[0]
    rows = pool.wait_finished(["t01000"], timeout=240)
    assert_each_phase_accepted_once(rows)
    log = (pool.tmp / "w.log").read_text()
    for number, size in ((small, 2048), (big, 8 << 20)):
        rec = pool.store("t01000").get(number)
        assert rec is not None
        ap, pc1 = rec.params["ap"], rec.params["pc1"]
        # CommD of a CC sector is the published zero commitment
        assert bytes.fromhex(ap["comm_d"]) == labeler_c.zero_commd(size)
        # the replica id follows from the sector's inputs
        porep = labeler_c.porep_id(size, pc1["api_version"])
        rid = reference.replica_id(prover_id("t01000"), number,
                                   bytes.fromhex(rec.params["ticket"]),
                                   bytes.fromhex(ap["comm_d"]), porep)
        assert pc1["replica_id"] == rid.hex() and pc1["layers"] == layers_for(size) == 2
        # the last layer the worker wrote is the one the labeler computes here
        last = labeler_c.label_layers(rid, porep, size // 32, 2, pc1["api_version"])
        assert pc1["last_layer_sha256"] == hashlib.sha256(last).hexdigest()
        # fin moved the layer files to the sealed store
        sealed = next(Path(pool.tmp / "data").rglob(f"sealed/t01000/{number}"))
        for layer in (1, 2):
            assert (sealed / labeler_c.layer_file_name(layer)).stat().st_size == size
        assert f"t01000/{number}/pc1 attempt 1" in log
        # two pc1 slots: the layers came from the shared pool of (3N+1)/2 · S
        assert f"pool for 2 slots of {size}-byte sectors: {7 * size // 2} bytes" in log
    # and for the 2KiB sector the pure-hashlib reference agrees, byte for byte
    rec = pool.store("t01000").get(small)
    assert rec is not None
    rid = bytes.fromhex(rec.params["pc1"]["replica_id"])
    porep = labeler_c.porep_id(2048, "1.1.0")
    ref_last = reference.label_layers(rid, porep, 64, 2, "1.1.0")[-1]
    assert hashlib.sha256(ref_last).hexdigest() == rec.params["pc1"]["last_layer_sha256"]


def test_deal_sector_without_data_fails_with_reason(pool: Pool) -> None:
    pool.worker("w", slots=1, kernel=True, env=SMALL)
    pool.miner("t01000")
    pool.enqueue("t01000", 1, "deal")
    row = pool.wait_finished(["t01000"], timeout=60)[0]
    assert row["state"] == "failed" and "no piece data" in row["error"]
