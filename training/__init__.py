"""hushlink training: the teacher ensemble, distillation into the streaming student, and
export to TFLite int8 for ``edge``. Needs the ``train`` extra (torch)."""
