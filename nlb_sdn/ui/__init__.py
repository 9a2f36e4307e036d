"""The dashboard's static files (index.html, app.js, style.css): package data served at ``/ui/``."""
