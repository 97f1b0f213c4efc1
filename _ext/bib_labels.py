"""Citation labels that stay unique across the whole book.

sphinxcontrib-bibtex requires every label to be unique over all pages, but the alpha
style gives two works by the same author in the same year the same label. An entry can
name its own label in a ``shortlabel`` field; all others keep their alpha label.
"""

from pybtex.plugin import register_plugin
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels.alpha import LabelStyle as AlphaLabels


class ShortLabels(AlphaLabels):
    def format_label(self, entry):
        return entry.fields.get("shortlabel") or super().format_label(entry)


class BookStyle(AlphaStyle):
    default_label_style = ShortLabels


register_plugin("pybtex.style.labels", "shortlabels", ShortLabels)
register_plugin("pybtex.style.formatting", "bookstyle", BookStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
