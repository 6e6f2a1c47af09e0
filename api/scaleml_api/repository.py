"""The layout of a model repository that training writes and serving, the monitor and the operator read.

`<root>/<model>/config.pbtxt` and numbered version directories, each holding these files.
"""

from __future__ import annotations

from typing import Final

# Files of a version directory.
TORCHSCRIPT_FILE: Final = "model.pt"
ONNX_FILE: Final = "model.onnx"
# The Python-backend model that runs model.pt.
TRITON_PYTHON_MODEL_FILE: Final = "model.py"
STATE_DICT_FILE: Final = "state_dict.pt"
LABELS_FILE: Final = "labels.json"
MODEL_CARD_FILE: Final = "model_card.json"
PROFILE_FILE: Final = "profile.json"
# At the model level, shared by its versions.
TRITON_CONFIG_FILE: Final = "config.pbtxt"
# The explanation model of a version (integrated gradients, a TorchScript file and the python-backend
# runner), in this subdirectory of the version; Triton serves it as `<model>-explain`, whose one
# output holds an attribution per input element.
EXPLAIN_DIR: Final = "explain"
EXPLAIN_SUFFIX: Final = "-explain"
ATTRIBUTIONS_NAME: Final = "ATTRIBUTIONS"
