"""Stage 1, load: read a checkpoint file without running it.

Owns the zip index (``zip_index``), the restricted unpickler (``safe_unpickle``), the checkpoint model
(``checkpoint``), layout/version identity (``detect``), the manifests of the real GPT-SoVITS classes
(``manifest``) and the phoneme symbol table (``symbols``).

May import: ``gsvinspect.errors``, ``gsvinspect.meta``, ``gsvinspect.data``. Nothing from a later stage.
"""
