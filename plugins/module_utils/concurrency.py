# -*- coding: utf-8 -*-
# Copyright: Contributors to the appconsistent.snapshots collection
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Splitting id lists into request-sized chunks and making calls side by side, for both providers."""

from __future__ import annotations

import concurrent.futures


def chunks(items, size):
    """The items in lists of at most ``size``, in order; [] for no items."""
    items = list(items)
    return [items[start:start + size] for start in range(0, len(items), size)]


def concurrently(call, items, workers):
    """[call(item) for item in items], at most workers calls at a time; every call is made before an error is raised."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [call(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(call, item) for item in items]
    return [future.result() for future in futures]
