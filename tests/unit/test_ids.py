"""threadline/ids.py: uuid5_str is the text of uuid.uuid5 for any namespace and name."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from threadline.ids import uuid5_str


@given(ns=st.uuids(), name=st.text())
def test_uuid5_str_is_the_text_of_uuid5(ns, name):
    assert uuid5_str(ns, name) == str(uuid.uuid5(ns, name))


def test_a_known_value():
    # RFC 4122 namespace DNS, "python.org": the value Python's documentation shows for uuid5
    assert uuid5_str(uuid.NAMESPACE_DNS, "python.org") == "886313e1-3b8a-5372-9b90-0c9aee199e5d"
