"""Stage 1, load: read a checkpoint file without running it.

Owns the zip index (``zip_index``), the allow-list of pickle globals (``allowlist``), the opcode
pre-scan (``pickle_scan``), the restricted unpickler (``safe_unpickle``), the safetensors header reader
(``safetensors_reader``), the checkpoint model (``checkpoint``), layout/version detection (``detect``)
and the one model identity every stage asks (``identity``), the manifests of the real GPT-SoVITS
classes (``manifest``) and the phoneme symbol table (``symbols``).

May import: ``gsvinspect.errors``, ``gsvinspect.meta``, ``gsvinspect.data``. Nothing from a later stage.
"""
