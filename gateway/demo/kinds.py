"""What the demo's simulated workers convert: kinds of job, their phases, sizes, times,
and the ways they fail, shaped after real converters (LibreOffice, ffmpeg, libheif)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One report: progress reached and the phase text, after ``pause`` seconds."""

    pause: float
    percent: float
    phase: str


@dataclass(frozen=True)
class Output:
    file_name: str
    content_type: str
    file_size_bytes: int
    file_count: int = 1


@dataclass(frozen=True)
class Plan:
    """One job, from start to output: what the worker reports and when."""

    source_format: str
    target_format: str
    file_name: str
    source_size_bytes: int
    steps: list[Step]
    output: Output
    metrics: dict[str, float]
    failure: tuple[str, str]  # the error a failure of this job reports


Phases = list[tuple[str, float]]  # (phase text, share of the job's time)


@dataclass(frozen=True)
class Kind:
    source_format: str
    target_format: str
    names: tuple[str, ...]
    size_range: tuple[int, int]  # source bytes
    seconds_range: tuple[float, float]  # how long the conversion takes
    phases: Callable[[random.Random], tuple[Phases, dict[str, float]]]
    output: Callable[[random.Random, str, int, dict[str, float]], Output]
    failures: tuple[tuple[str, str], ...]


def _pages(word: str, count: int, first: Phases, last: Phases) -> Phases:
    body = [(f"Rendering {word} {n}/{count}", 0.7 / count) for n in range(1, count + 1)]
    return [*first, *body, *last]


def _document(rng: random.Random) -> tuple[Phases, dict[str, float]]:
    pages = rng.randint(3, 40)
    return (_pages("page", pages, [("Downloading source", 0.05), ("Loading document", 0.1),
                                   ("Laying out pages", 0.05)],
                   [("Embedding fonts", 0.05), ("Uploading result", 0.05)]),
            {"pages": pages})


def _slides(rng: random.Random) -> tuple[Phases, dict[str, float]]:
    slides = rng.randint(8, 60)
    return (_pages("slide", slides, [("Downloading source", 0.05),
                                     ("Loading presentation", 0.15)],
                   [("Uploading result", 0.1)]), {"slides": slides})


def _video(rng: random.Random) -> tuple[Phases, dict[str, float]]:
    return ([("Probing", 0.03), ("Encoding pass 1/2", 0.42), ("Encoding pass 2/2", 0.45),
             ("Muxing", 0.04), ("Uploading result", 0.06)],
            {"duration_seconds": round(rng.uniform(20, 900), 1)})


def _audio(rng: random.Random) -> tuple[Phases, dict[str, float]]:
    return ([("Probing", 0.05), ("Resampling to 44.1 kHz", 0.2), ("Encoding", 0.6),
             ("Writing ID3 tags", 0.05), ("Uploading result", 0.1)],
            {"duration_seconds": round(rng.uniform(30, 3600), 1)})


def _scan(rng: random.Random) -> tuple[Phases, dict[str, float]]:
    pages = rng.randint(2, 30)
    return (_pages("page", pages, [("Splitting pages", 0.05)],
                   [("Packaging", 0.15), ("Uploading result", 0.1)]), {"pages": pages})


def _photo(rng: random.Random) -> tuple[Phases, dict[str, float]]:
    return ([("Decoding HEIF", 0.4), ("Converting colour profile", 0.2),
             ("Encoding JPEG", 0.3), ("Uploading result", 0.1)],
            {"megapixels": float(rng.choice((12, 24, 48)))})


def _renamed(name: str, extension: str) -> str:
    return f"{name.rsplit('.', 1)[0]}.{extension}"


def _one(content_type: str, extension: str, ratio: tuple[float, float]
         ) -> Callable[[random.Random, str, int, dict[str, float]], Output]:
    def output(rng: random.Random, name: str, size: int, metrics: dict[str, float]) -> Output:
        return Output(_renamed(name, extension), content_type,
                      max(1_000, int(size * rng.uniform(*ratio))))
    return output


def _zip(rng: random.Random, name: str, size: int, metrics: dict[str, float]) -> Output:
    pages = int(metrics["pages"])
    return Output(_renamed(name, "zip"), "application/zip",
                  int(pages * rng.uniform(150_000, 900_000)), file_count=pages)


KINDS: tuple[Kind, ...] = (
    Kind("docx", "pdf", ("Quarterly report.docx", "contract-v3.docx", "thesis_final.docx",
                         "Offer letter.docx", "minutes-2026-11-24.docx"),
         (40_000, 8_000_000), (3, 20), _document, _one("application/pdf", "pdf", (0.6, 1.4)),
         (("libreoffice.password_protected", "The document is password-protected."),
          ("libreoffice.conversion_failed", "soffice exited with code 81 while laying out "
                                            "page 7"))),
    Kind("pptx", "pdf", ("Sales kickoff.pptx", "roadmap-2027.pptx", "Board deck Q3.pptx"),
         (500_000, 60_000_000), (5, 30), _slides, _one("application/pdf", "pdf", (0.3, 0.9)),
         (("libreoffice.unsupported_content", "Embedded OLE object on slide 14 cannot be "
                                              "rendered."),)),
    Kind("mp4", "webm", ("product-demo.mp4", "webinar recording.mp4", "drone_clip_0042.mp4"),
         (20_000_000, 900_000_000), (15, 60), _video,
         _one("video/webm", "webm", (0.4, 0.8)),
         (("ffmpeg.invalid_input", "ffmpeg exited with code 1: Invalid data found when "
                                   "processing input"),
          ("ffmpeg.out_of_memory", "The encoder was killed: out of memory at frame 18211."))),
    Kind("wav", "mp3", ("interview-raw.wav", "podcast ep 31.wav", "field-recording.wav"),
         (10_000_000, 400_000_000), (4, 15), _audio, _one("audio/mpeg", "mp3", (0.08, 0.12)),
         (("ffmpeg.unsupported_codec", "Audio codec 'adpcm_ima_wav' is not supported."),)),
    Kind("pdf", "png", ("scanned-invoices.pdf", "floor plans.pdf", "brochure_print.pdf"),
         (200_000, 50_000_000), (5, 40), _scan, _zip,
         (("pdf.encrypted", "The PDF is encrypted and no password was given."),
          ("pdf.malformed", "xref table is damaged beyond repair (object 112)."))),
    Kind("heic", "jpg", ("IMG_4821.heic", "IMG_5033.heic", "holiday-007.heic"),
         (1_500_000, 9_000_000), (2, 5), _photo, _one("image/jpeg", "jpg", (0.9, 1.6)),
         (("heic.decode_error", "HEVC profile Main 4:4:4 is not supported by the decoder."),)),
)


def plan(kind: Kind, rng: random.Random, *, fast: bool = False) -> Plan:
    """A job of ``kind``: reports at uneven intervals, with progress that speeds up and
    slows down (a phase's share of time and of progress differ), 2 to 60 seconds long
    (``fast``: 2 to 6 seconds, whatever the kind)."""
    low, high = kind.seconds_range
    seconds = rng.uniform(2, 6) if fast else rng.uniform(low, high)
    size = int(rng.uniform(*kind.size_range))
    phases, metrics = kind.phases(rng)
    total = sum(share for _, share in phases)
    # Time per phase as given; progress per phase skewed, so the bar's speed varies.
    weights = [share * rng.uniform(0.5, 1.5) for _, share in phases]
    progress_total = sum(weights)
    steps: list[Step] = []
    percent = 0.0
    for (phase, share), weight in zip(phases, weights, strict=True):
        phase_seconds = seconds * share / total
        gain = 100 * weight / progress_total
        reports = max(1, round(phase_seconds / rng.uniform(0.4, 1.2)))
        for n in range(reports):
            pause = phase_seconds / reports * rng.uniform(0.6, 1.4)
            done = percent + gain * (n + 1) / reports
            steps.append(Step(pause, min(99.9, round(done, 1)), phase))
        percent += gain
    name = rng.choice(kind.names)
    output = kind.output(rng, name, size, metrics)
    return Plan(kind.source_format, kind.target_format, name, size, steps, output,
                metrics, rng.choice(kind.failures))
