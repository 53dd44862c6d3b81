"""The electronic notice (电子违停告知单): the evidence pack printed as a one-page PDF, in Chinese
with English beneath.

It shows the ticket number, plate, place and times, the penalty and its legal basis as the city
states them (``NoticeTerms``: ``PW_NOTICE_PENALTY``, ``PW_NOTICE_LEGAL_BASIS``, where to settle it),
a summary of the evidence (both captures, the distance and interval between them, the warning's
acceptance and delivery, the rule), how to appeal and until when, and the verification code (from
the ticket's link in the ticket record) that anyone holding the tickets topic can check. The QR code
opens the ticket's page on the driver page (``<PW_PUBLIC_BASE_URL>/d/<code>``) when the case has a
driver-page code; otherwise it holds the ticket's link in the record.

The text is set in WenQuanYi Micro Hei from Debian's ``fonts-wqy-microhei`` (installed by
``scripts/services.sh install``), embedded as a subset so that any reader shows the Chinese.
Without that file it falls back to reportlab's CID font STSong-Light, which is not embedded: the
reader must then bring its own Chinese fonts (poppler, for one, needs ``poppler-data``).
"""

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from xml.sax.saxutils import escape

from pipeline.appeals.grounds import GROUNDS
from pipeline.evidence import store as evidence_images

log = logging.getLogger(__name__)
FONT_FILES = (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),)


def _font() -> str:
    for path in FONT_FILES:
        if path.exists():
            pdfmetrics.registerFont(TTFont("WenQuanYiMicroHei", str(path), subfontIndex=0))
            return "WenQuanYiMicroHei"
    log.warning("notices: %s is missing (apt-get install fonts-wqy-microhei); using the non-embedded CID font "
                "STSong-Light", FONT_FILES[0])
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


FONT = _font()

TITLE = ParagraphStyle("title", fontName=FONT, fontSize=18, leading=24, alignment=1)
SUBTITLE = ParagraphStyle("subtitle", fontName=FONT, fontSize=10, leading=14, alignment=1, textColor=colors.grey)
HEAD = ParagraphStyle("head", fontName=FONT, fontSize=12, leading=16, spaceBefore=8, spaceAfter=4)
BODY = ParagraphStyle("body", fontName=FONT, fontSize=9.5, leading=13, wordWrap="CJK")
SMALL = ParagraphStyle("small", fontName=FONT, fontSize=8, leading=10.5, wordWrap="CJK", textColor=colors.grey)
CODE = ParagraphStyle("code", fontName=FONT, fontSize=16, leading=20)
TINY = ParagraphStyle("tiny", fontName=FONT, fontSize=6.5, leading=8, wordWrap="CJK", textColor=colors.grey)


def _local(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else "—"


def _p(text: str, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _duration(seconds: float) -> tuple[str, str]:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}分{rest:02d}秒", f"{minutes} min {rest:02d} s"


def _grid(rows: list[list], widths: list[float]) -> Table:
    table = Table(rows, colWidths=widths)
    table.setStyle(TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
    ]))
    return table


def _qr(text: str, size: float = 32 * mm) -> Drawing:
    widget = QrCodeWidget(text)
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    return drawing


@dataclass(frozen=True)
class NoticeTerms:
    """What the city prints on every notice besides the pack."""

    legal_basis: str = ""
    penalty: str = ""
    payment: str = ""
    page_base: str | None = None
    """``<PW_PUBLIC_BASE_URL>/d/`` with the driver page on (the QR code opens the ticket's page)."""

    @classmethod
    def of(cls, settings) -> "NoticeTerms":
        return cls(settings.notice_legal_basis, settings.notice_penalty, settings.notice_payment,
                   f"{settings.driver_base_url}/d/" if settings.driver_page else None)


async def page_url(conn, number: str, terms: NoticeTerms) -> str | None:
    """The ticket's page on the driver page, or None (the page off, or a case without a code)."""
    if not terms.page_base:
        return None
    code = await conn.fetchval("SELECT c.driver_code FROM tickets t JOIN cases c ON c.id = t.case_id "
                               "WHERE t.number = $1", number)
    return f"{terms.page_base}{code}" if code else None


async def images_of(conn, pack: dict) -> dict[str, bytes]:
    """The stored evidence images of a pack's captures, by event id (pipeline/evidence)."""
    return await evidence_images.images_by_event(conn, UUID(pack["ticket"]["case_id"]),
                                                 [c["event_id"] for c in pack["captures"]])


PHOTO_W, PHOTO_H = 48 * mm, 30 * mm


def _photo(c: dict, data: bytes | None):
    """A capture's image scaled into PHOTO_W x PHOTO_H, or why it is not there."""
    if data:
        try:
            picture = Image(io.BytesIO(data))
            scale = min(PHOTO_W / picture.imageWidth, PHOTO_H / picture.imageHeight)
            picture.drawWidth, picture.drawHeight = picture.imageWidth * scale, picture.imageHeight * scale
            return picture
        except Exception:  # noqa: BLE001 - a picture reportlab cannot read must not lose the notice
            log.exception("notice: evidence image of %s", c["event_id"])
    image = c.get("image")
    if image is None:
        return _p("无图像 No image", SMALL)
    if image["state"] == "pending":
        return _p("图像获取中 Image being fetched", SMALL)
    return _p(f"未获取到图像 Image not obtained: {image['reason'] or image['state']}", SMALL)


def _capture_cell(label: str, c: dict, data: bytes | None) -> Table:
    """One capture: its image (or why there is none) beside its time, camera, place, URL and SHA-256."""
    text = [_p(label), _p(f"{_local(c['taken_at'])} · {c['camera_id']} · {c['integrator'] or '—'}\n{c['place'] or ''}", SMALL),
            _p(f"{c['image_url'] or '—'}\nSHA-256 {c['image_sha256'] or '(未提供 not given)'}", TINY)]
    cell = Table([[_photo(c, data), text]], colWidths=[PHOTO_W + 2 * mm, 87 * mm - PHOTO_W])
    cell.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 1),
                              ("RIGHTPADDING", (0, 0), (-1, -1), 1), ("TOPPADDING", (0, 0), (-1, -1), 1),
                              ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
    return cell


def render(pack: dict, terms: NoticeTerms | None = None, page: str | None = None,
           images: dict[str, bytes] | None = None) -> bytes:
    """The notice for an evidence pack (``pipeline.tickets.pack.evidence_pack``), as PDF bytes;
    ``page``: the ticket's driver page, for the QR code; ``images``: the captures' images by event
    id (``images_of``), printed side by side."""
    terms = terms or NoticeTerms()
    t, (violation, fresh), between = pack["ticket"], pack["captures"], pack["between"]
    warning, decision, appeal, record = pack["warning"], pack["decision"], pack["appeal"], pack["record"]
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=16 * mm, rightMargin=16 * mm, topMargin=10 * mm,
                            bottomMargin=10 * mm, title=f"电子违停告知单 {t['number']}", author=t["authority"],
                            subject=f"Electronic parking notice {t['number']}")
    status = ("已撤销 Void: " + (t["void_reason"] or "") + f" ({_local(t['voided_at'])})") if t["status"] == "voided" \
        else "有效 Standing"
    facts = [
        ("告知单号 Ticket no.", t["number"]),
        ("车牌 Plate", t["plate"]),
        ("违停地点 Place", f"{t['place']}（{t['zone']}）  {t['position']['lat']:.5f}, {t['position']['lon']:.5f}"),
        ("违停抓拍 Violation seen", f"{_local(violation['taken_at'])} · {violation['camera_id']}"),
        ("告知短信 Warning SMS", "—" if warning is None else
         f"网关接收 accepted {_local(warning['accepted_at'])} · 送达 delivered {_local(warning['delivered_at'])}"),
        ("驶离期限 Deadline to move", _local(t["deadline_at"])),
        ("期限后抓拍 Seen after the deadline", f"{_local(fresh['taken_at'])} · {fresh['camera_id']}"),
        ("开具时间 Issued", _local(t["issued_at"])),
        ("状态 Status", status),
    ]
    if terms.penalty or terms.legal_basis:
        facts.append(("处罚及依据 Penalty, legal basis", "；".join(x for x in (terms.penalty, terms.legal_basis) if x)))
    story = [
        _p(f"{t['authority']}", SUBTITLE),
        _p("电子违停告知单", TITLE),
        _p("Electronic notice of a parking violation", SUBTITLE),
        Spacer(1, 2 * mm),
        _grid([[_p(k), _p(v)] for k, v in facts], [48 * mm, 130 * mm]),
        _p("证据摘要 Evidence", HEAD),
    ]
    images = images or {}
    evidence = Table([[_capture_cell("违停抓拍 Violation", violation, images.get(violation["event_id"])),
                       _capture_cell("期限后抓拍 After the deadline", fresh, images.get(fresh["event_id"]))]],
                     colWidths=[89 * mm, 89 * mm])
    evidence.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
                                  ("LEFTPADDING", (0, 0), (-1, -1), 1), ("RIGHTPADDING", (0, 0), (-1, -1), 1)]))
    story += [
        evidence,
        Spacer(1, 2 * mm),
        _p(f"两次抓拍相距 {between['distance_m']:g} 米，间隔 {_duration(between['interval_seconds'])[0]}。"
           f"The captures are {between['distance_m']:g} m and {_duration(between['interval_seconds'])[1]} apart."),
        _p(f"依据 Rule: {decision['rule']['zh']}。\n{decision['rule']['en']}."),
    ]
    if warning and warning["text"]:
        story.append(_p(f"告知短信内容 Warning text: {warning['text']}", SMALL))
    grounds = "；".join(zh for zh, _ in GROUNDS.values())
    where_zh = f"在司机页面 {appeal['how']['url']} 凭告知单号、车牌和短信查询码提出，或" if appeal["how"]["url"] else ""
    where_en = (f"on the driver page {appeal['how']['url']} with the ticket number, plate and the code from the SMS, "
                "or ") if appeal["how"]["url"] else ""
    story += [
        _p("申诉 How to appeal", HEAD),
        _p(f"如有异议，请于 {_local(appeal['until'])} 前申诉：{where_zh}拨打 {appeal['how']['phone']}。"
           f"申诉理由可为：{grounds}。"),
        _p(f"To contest this notice, appeal by {_local(appeal['until'])}: {where_en}call {appeal['how']['phone']}. "
           f"Grounds: {'; '.join(en for _, en in GROUNDS.values())}."),
    ]
    if terms.payment and t["status"] != "voided":
        story.append(_p("处理 To settle: " + terms.payment.replace("|", "/"), SMALL))
    code = record["verification_code"] or "—"
    last = record["links"][0] if record["links"] else None
    check = (f"告知单记录第 {last['seq']} 环 link {last['seq']} of the ticket record: {last['hash']}" if last
             else "本告知单开具于告知单记录启用之前 issued before the ticket record began")
    verify_rows = [[
        [_p("核验码 Verification code", HEAD), _p(code, CODE),
         _p("核验码为本告知单在告知单记录（哈希链）中一环的哈希值前16位，可对照告知单消息主题核验。"
            "The code is the first 16 hex digits of this ticket's link in the ticket record (a hash chain), "
            "published with the ticket on the tickets topic.", SMALL),
         _p(check, SMALL)]
        + ([_p(f"扫码查看本告知单、证据与申诉 Scan to see this ticket, its evidence and the appeal: {page}", SMALL)]
           if page else []),
        _qr(page or (f"parkwarden-ticket:{t['number']}:{last['seq']}:{last['hash']}" if last else t["number"])),
    ]]
    verify = Table(verify_rows, colWidths=[140 * mm, 38 * mm])
    verify.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOX", (0, 0), (-1, -1), 0.4, colors.grey)]))
    story += [Spacer(1, 2 * mm), verify,
              _p(f"生成于 Generated {_local(pack['generated_at'])} · 案件 case {t['case_id']}", SMALL)]
    doc.build(story)
    return out.getvalue()
