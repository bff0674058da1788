"""camotune: hyperparameter search for CamoXpert camouflaged-object detection."""

__version__ = "0.1.0"
