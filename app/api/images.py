"""/v1/images/{id}.png: the stored PNGs.

Image ids are unguessable (derived from a random job id), so image URLs work
as capability links in <img> tags without an API key. Previews (a job's
intermediate predicted-x_0 pictures) are served the same way. The images of a
survey study's jobs are the exception: they are served only to a key (or a
signed-in researcher) that may see the study, since their text chunks name
the method and a rater could match their pixels with the pairs on screen
(``app.survey.access.job_visible``).
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from app.auth import optional_api_key
from app.deps import get_db, get_settings
from app.errors import excerpt, problem_responses
from app.keys import ApiKey
from app.survey.access import job_visible
from app.survey.researcher_auth import session_key
from worker import media
from worker.config import Settings
from worker.ids import is_row_id
from worker.models import Image, Job, Preview

router = APIRouter(prefix="/v1", tags=["images"])


@router.get("/images/{image_id}.png", response_class=FileResponse, summary="An image as PNG",
            responses={200: {"content": {"image/png": {}}, "description": "the PNG"}, **problem_responses(404)})
def image_png(image_id: Annotated[str, Path(max_length=64)], request: Request,
              key: ApiKey | None = Depends(optional_api_key), session: Session = Depends(get_db),
              settings: Settings = Depends(get_settings)) -> FileResponse:
    image = (session.get(Image, image_id) or session.get(Preview, image_id)) if is_row_id(image_id) else None
    job = session.get(Job, image.job_id) if image is not None else None
    if job is not None and job.study_id is not None and key is None:
        key = session_key(request, session)  # a signed-in researcher's browser
    if job is None or not job_visible(session, key, job, requires_key=False):
        raise HTTPException(404, f"no image with id {excerpt(image_id, 40)!r}")
    private = job.study_id is not None
    path = media.resolve(settings.media_dir, image.path)
    if not path.is_file():
        raise HTTPException(404, f"image {image_id} is recorded but its file {image.path} is missing from the "
                                 "media directory")
    cache = "private, max-age=3600" if private else "public, max-age=31536000, immutable"
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": cache, "ETag": f'"{image.sha256}"',
                                                               "X-Content-Type-Options": "nosniff"})
