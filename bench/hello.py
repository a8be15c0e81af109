"""The framework ceiling: FastAPI's smallest async endpoint, served like the service."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "hello"}
