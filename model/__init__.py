"""CamoXpert camouflaged-object detection model (imports only torch and timm)."""

from camotune.model.camoxpert import (
    UNFREEZE_LEVELS,
    CamoXpert,
    CamoXpertOutput,
    build_model,
)

__all__ = ["UNFREEZE_LEVELS", "CamoXpert", "CamoXpertOutput", "build_model"]
