"""/v1/images/{id}.png: the stored PNGs.

Previews (a job's intermediate predicted-x_0 pictures) are served the same way. Image ids are unguessable (derived from a random job id), so image URLs work
as capability links in <img> tags without an API key.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from worker import media
from worker.config import Settings
from worker.ids import is_row_id
from worker.models import Image, Preview

router = APIRouter(prefix="/v1", tags=["images"])


@router.get("/images/{image_id}.png", response_class=FileResponse, summary="An image as PNG",
            responses={200: {"content": {"image/png": {}}, "description": "the PNG"}, **problem_responses(404)})
def image_png(image_id: Annotated[str, Path(max_length=64)], session: Session = Depends(get_db),
              settings: Settings = Depends(get_settings)) -> FileResponse:
    image = (session.get(Image, image_id) or session.get(Preview, image_id)) if is_row_id(image_id) else None
    if image is None:
        raise HTTPException(404, f"no image with id {excerpt(image_id, 40)!r}")
    path = media.resolve(settings.media_dir, image.path)
    if not path.is_file():
        raise HTTPException(404, f"image {image_id} is recorded but its file {image.path} is missing from the "
                                 "media directory")
    return FileResponse(path, media_type="image/png", headers={
        "Cache-Control": "public, max-age=31536000, immutable", "ETag": f'"{image.sha256}"'})
