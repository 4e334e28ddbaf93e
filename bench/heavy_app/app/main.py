"""The heavy bench fixture: FastAPI + SQLAlchemy + pydantic-settings + httpx + pandas (bench only).

A cold start imports for about a second on the bench machine, as issue 12 asks.

GET / -> {"version": VERSION, "pid": ...}, GET /health -> {"ok": true}.
"""
import os

import httpx  # noqa: F401  (a typical client dependency: import cost only)
import pandas as pd
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
    users = pd.DataFrame({"users": [count_users()]})
    return {"version": VERSION, "pid": os.getpid(), "users": int(users["users"].sum())}


@app.get("/health")
async def health():
    return {"ok": True, "pid": os.getpid()}
