"""/v1/presets: what can be generated here, and the server's limits."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.deps import get_settings
from app.schemas import PresetList
from model_core.presets import default_preset_name, list_presets
from worker.config import Settings

router = APIRouter(prefix="/v1", tags=["presets"])


@router.get("/presets", response_model=PresetList, summary="Presets, their classes, methods and defaults")
def presets(request: Request, settings: Settings = Depends(get_settings)) -> dict:
    return {
        "default": default_preset_name(),
        "presets": [p.to_public_dict() for p in list_presets()],
        "limits": {"max_images_per_request": settings.max_images_per_request, "max_scale": settings.max_scale,
                   "max_steps": settings.max_steps, "generation_requires_key": settings.generation_requires_key,
                   "rate_limit": request.app.state.rate_limiter.describe()},
    }
