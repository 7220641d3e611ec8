"""heatdeploy's reference weights (``weights/``) and evaluation data (``data/eval``, ``data/samples``).

heatdeploy finds them through ``heatdeploy.refdata.reference_data``; nothing here is meant to be imported.
"""
