"""Views exercising what a bridge server can get wrong: templates, CSRF-checked POST,
streamed uploads (never held whole in memory) and streamed responses."""

import hashlib
import time

from django import forms
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

#: Size of each read of an upload, in bytes.
READ_SIZE = 65536


class NameForm(forms.Form):
    name = forms.CharField(max_length=100)


def index(request):
    return render(request, "pages/index.html")


def form(request):
    if request.method == "POST":
        bound = NameForm(request.POST)
        if bound.is_valid():
            return render(request, "pages/hello.html", {"name": bound.cleaned_data["name"]})
        return render(request, "pages/form.html", {"form": bound}, status=400)
    return render(request, "pages/form.html", {"form": NameForm()})


@csrf_exempt
def upload(request):
    """POST a multipart form with a ``file`` field, or any other body raw.

    Answers ``sha256 <hex> <size>`` of the file (multipart) or of the whole body (raw).
    """
    if request.method != "POST":
        return HttpResponse("POST a file\n", status=405, content_type="text/plain")
    digest, size = hashlib.sha256(), 0
    if request.content_type == "multipart/form-data":
        upload_file = request.FILES.get("file")
        if upload_file is None:
            return HttpResponse("no 'file' field\n", status=400, content_type="text/plain")
        for chunk in upload_file.chunks(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    else:
        while True:
            chunk = request.read(READ_SIZE)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return HttpResponse("sha256 %s %d" % (digest.hexdigest(), size), content_type="text/plain")


def stream(request):
    def chunks():
        for i in range(5):
            if i:
                time.sleep(0.2)
            yield "django-chunk-%d\n" % i

    return StreamingHttpResponse(chunks(), content_type="text/plain")
