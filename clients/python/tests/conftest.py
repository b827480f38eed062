from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[3]


def signing_vectors() -> List[Dict[str, Any]]:
    path = Path(os.environ.get("ARMOR_VECTORS", ROOT / "testdata" / "vectors.json"))
    vectors: List[Dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["signing"]
    return vectors


@pytest.fixture
def live() -> Dict[str, str]:
    """The server started by clients/live-env.sh, with a key of its admin."""
    names = ("ARMOR_TEST_URL", "ARMOR_TEST_KEY_ID", "ARMOR_TEST_SECRET_KEY")
    if not all(os.environ.get(n) for n in names):
        if os.environ.get("ARMOR_TEST_REQUIRE_LIVE"):
            pytest.fail("ARMOR_TEST_REQUIRE_LIVE is set but ARMOR_TEST_URL/KEY_ID/SECRET_KEY are not")
        pytest.skip("no live server: run the tests through clients/live-env.sh")
    return {
        "url": os.environ["ARMOR_TEST_URL"].rstrip("/"),
        "key_id": os.environ["ARMOR_TEST_KEY_ID"],
        "secret": os.environ["ARMOR_TEST_SECRET_KEY"],
    }
