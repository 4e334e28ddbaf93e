"""The heavy bench fixture: FastAPI + SQLAlchemy + pydantic-settings + httpx (bench only).

GET / -> {"version": VERSION, "pid": ...}, GET /health -> {"ok": true}.
"""
import os

import httpx  # noqa: F401  (a typical client dependency: import cost only)
from fastapi import FastAPI
from pydantic_settings import BaseSettings
from sqlalchemy.dialects import mysql, postgresql  # noqa: F401  (import cost only)

from app.models import count_users
from app.version import VERSION


class Settings(BaseSettings):
    app_name: str = "heavy"


settings = Settings()
app = FastAPI(title=settings.app_name)


@app.get("/")
async def root():
    return {"version": VERSION, "pid": os.getpid(), "users": count_users()}


@app.get("/health")
async def health():
    return {"ok": True, "pid": os.getpid()}
