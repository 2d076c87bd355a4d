"""The WSGI entry point: ``gunicorn wsgi:app`` (see gunicorn.conf.py) or any WSGI host."""

from webapp import create_app

app = create_app()
