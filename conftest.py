"""pytest runs every notebook in the ``smoke`` size unless RFM_TEACH_MODE says otherwise.

Set here, before collection, so that the kernels nbval starts inherit it.
"""

import os

os.environ.setdefault("RFM_TEACH_MODE", "smoke")
