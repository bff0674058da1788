"""The sweep folder on disk, without Ray: its file names, ``sweep.yaml`` and ``trials.jsonl``.

`camotune.search` writes a sweep folder, `camotune.results` and `camotune.tracking` read it;
all three import this package, none imports another for the folder's format.
"""

from camotune.sweepdir.events import append_event, read_events
from camotune.sweepdir.layout import SWEEP_FILE, TRIALS_DIR, TRIALS_FILE
from camotune.sweepdir.sweepfile import read_settings_dict, write_settings_dict

__all__ = ["SWEEP_FILE", "TRIALS_DIR", "TRIALS_FILE", "append_event", "read_events",
           "read_settings_dict", "write_settings_dict"]
