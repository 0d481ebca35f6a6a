"""Exports of one SAE: labeler's JSONL of everything (``jsonl.feature_lines``) and Neuronpedia's
own import layout (``neuronpedia.export_neuronpedia``).  The CLI (``labeler export``) and the
REST API (``GET /v1/export/{model}/{sae}``) write the same content."""

from labeler.export.jsonl import feature_lines
from labeler.export.neuronpedia import NeuronpediaExport, export_neuronpedia
from labeler.export.neuronpedia_meta import default_source
from labeler.export.neuronpedia_rows import BOT_USER_ID, Source

FORMATS = ("labeler", "neuronpedia")

__all__ = ["FORMATS", "BOT_USER_ID", "NeuronpediaExport", "Source", "default_source", "export_neuronpedia",
           "feature_lines"]
