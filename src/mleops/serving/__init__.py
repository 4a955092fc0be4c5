"""Model serving: request validation and likelihood outputs (``service``), the Seldon Core
python-wrapper adapter (``seldon``), and the client side (``client``)."""
