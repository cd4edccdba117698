"""Controllers: the app's background work, one small module per job, none of it a widget.

Each controller owns one kind of work and the state that goes with it, starts its thread workers on
the app (so ``app.workers`` sees and cancels them), and takes the result back on the UI thread:

* ``loading``   open both files and align them (the first paint's work);
* ``rules``     re-align after a rules edit, suggest/load/save rules;
* ``stats``     per-key statistics, batched to <= 10 UI updates a second;
* ``diagnosis`` the GPT-SoVITS findings of the current alignment;
* ``detail``    the detail pane of the line under the cursor (and its phoneme-row table);
* ``spectrum``  `v`: change spectra of a key or a module's most-changed weights;
* ``errors``    the one place problems reach the user (a notice, a dialog, or the load message).

A new view (a screen) with work of its own adds a module here; ``app.py`` only wires it in.
Controllers call the library only through :class:`~gsvinspect_tui.session.Session`.
"""

from .base import Controller
from .detail import DetailController
from .diagnosis import DiagnosisController
from .errors import ErrorSurface
from .loading import Loader
from .rules import RulesController
from .spectrum import SpectrumController
from .stats import StatsController

__all__ = ["Controller", "DetailController", "DiagnosisController", "ErrorSurface", "Loader",
           "RulesController", "SpectrumController", "StatsController"]
