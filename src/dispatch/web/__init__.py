"""The subscriber web app (Starlette): pages, the guards in front of them, and uvicorn
on a thread."""
