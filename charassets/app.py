"""A small local web app: upload an image and/or paste tags, see the attribute JSON and its evidence.

``make app`` (or ``python -m charassets.app``) serves it on http://127.0.0.1:7860. It runs the
same domain code as the pipeline: the tag path of ``extract --tags``, the image path of
``extract --image``, and ``reconcile`` when both are given. Nothing leaves the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from charassets.domain.ontology import Ontology

EVIDENCE_COLUMNS = ["attribute", "value", "confidence", "source", "evidence"]


def analyse(image_path: str | None, tags: str | None, ontology: Ontology, backend: str = "animeface") -> tuple[dict, list[list]]:
    """The record JSON for the inputs (tags, image, or both reconciled) and one evidence row per decided attribute."""
    from charassets.domain.image_signals import ImageSignals, image_facts, image_record, reconcile, signals_for
    from charassets.domain.images import ImageRejected, decode_image
    from charassets.domain.pipeline import extract_one

    tags = (tags or "").strip()
    if not image_path and not tags:
        return {"status": "rejected", "reason": "give an image, tags, or both"}, []
    if image_path and not tags:
        record = image_record(Path(image_path).read_bytes(), Path(image_path).name, ontology, backend)
    else:
        record = extract_one(tags, ontology)
        if image_path:
            try:
                decoded = decode_image(Path(image_path).read_bytes())
                signals: ImageSignals = signals_for(decoded.image, backend, ontology)
            except ImageRejected as e:
                record["flags"] = [*record["flags"], "image_rejected", f"image: {e}"]
                record["image"] = {"ref": Path(image_path).name}
            else:
                record["image"] = image_facts(decoded, signals, Path(image_path).name)
                if record["status"] == "ok":
                    by_key = {f.key: record["attributes"][f.name] for f in ontology.fields}
                    merged, flags = reconcile(by_key, signals)
                    record["attributes"] = {f.name: merged[f.key] for f in ontology.fields}
                    record["flags"] = [*record["flags"], *flags]
    rows = []
    for name, a in (record.get("attributes") or {}).items():
        if a and a["value"] not in ("unknown", []):
            value = ", ".join(a["value"]) if isinstance(a["value"], list) else a["value"]
            rows.append([name, value, round(float(a["confidence"]), 3), a["source"], "; ".join(a["evidence"])])
    return record, rows


def annotated(image_path: str, record: dict):
    """The picture as decoded (EXIF-rotated RGB), with a box around each face the backend found."""
    from PIL import ImageDraw

    from charassets.domain.images import ImageRejected, decode_image

    try:
        image = decode_image(Path(image_path).read_bytes()).image.copy()
    except ImageRejected:
        return None
    draw = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 200))
    for x, y, w, h in (record.get("image") or {}).get("face_boxes") or []:
        draw.rectangle((x, y, x + w, y + h), outline=(255, 40, 200), width=width)
    return image


def build_app(ontology: Ontology | None = None, backend: str = "animeface"):
    import gradio as gr

    ontology = ontology or Ontology.load()

    def run(file, tags):
        path = file if isinstance(file, str) or file is None else file.name
        record, rows = analyse(path, tags, ontology, backend)
        return record, rows, annotated(path, record) if path else None

    with gr.Blocks(title="charassets: character attributes") as app:
        gr.Markdown(
            "## charassets\nUpload a character image, paste Danbooru-style tags, or both: the attribute record as the table holds it."
        )
        with gr.Row():
            with gr.Column():
                file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="image-input")
                tags = gr.Textbox(
                    label="Tags", placeholder="1girl, solo, long hair, blue eyes, school uniform", lines=3, elem_id="tags-input"
                )
                button = gr.Button("Extract", variant="primary", elem_id="extract")
                shown = gr.Image(label="Image as read, faces boxed", interactive=False, height=320, elem_id="shown")
            with gr.Column():
                record = gr.JSON(label="Attribute JSON", elem_id="record")
                evidence = gr.Dataframe(headers=EVIDENCE_COLUMNS, label="Evidence", elem_id="evidence", interactive=False)
        button.click(run, inputs=[file, tags], outputs=[record, evidence, shown])
    return app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=7860, show_default=True)
@click.option("--image-backend", default=lambda: os.environ.get("CHARASSETS_IMAGE_BACKEND", "animeface"), show_default="animeface")
def main(host: str, port: int, image_backend: str) -> None:
    """Serve the app locally."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    build_app(backend=image_backend).launch(server_name=host, server_port=port, show_error=True)


if __name__ == "__main__":
    main()
