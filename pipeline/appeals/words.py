"""The console's words for tickets' paperwork and appeals, in Chinese and English; ``install`` adds
them to the console's catalogue (``pipeline/console/i18n.py``) when the views register."""

from pipeline.appeals.grounds import CHANNELS, GROUNDS, OUTCOMES
from pipeline.console import i18n

TEXT: dict[str, tuple[str, str]] = {
    "nav.appeals": ("申诉", "Appeals"),
    "ticket.pack": ("证据包（JSON）", "Evidence pack (JSON)"),
    "ticket.notice": ("电子告知单（PDF）", "Notice (PDF)"),
    "ticket.appeal": ("申诉", "Appeal"),
    "appeals.title": ("申诉处理", "Appeals"),
    "appeals.open": ("待处理申诉", "Open appeals"),
    "appeals.decided": ("最近已处理", "Recently decided"),
    "appeals.none": ("没有待处理的申诉", "No open appeal"),
    "appeals.counts": ("待处理 {open} 件，其中逾期 {overdue} 件", "{open} open, {overdue} overdue"),
    "appeal.title": ("申诉 {number}", "Appeal {number}"),
    "appeal.ticket": ("告知单", "Ticket"),
    "appeal.ground": ("申诉理由", "Ground"),
    "appeal.statement": ("陈述", "Statement"),
    "appeal.attachments": ("附件", "Attachments"),
    "appeal.channel": ("渠道", "Channel"),
    "appeal.received": ("收到时间", "Received"),
    "appeal.due": ("应处理期限", "Decision due"),
    "appeal.overdue": ("已逾期", "overdue"),
    "appeal.recorded_by": ("登记人", "Recorded by"),
    "appeal.outcome": ("处理结果", "Outcome"),
    "appeal.decided": ("处理时间", "Decided"),
    "appeal.decided_by": ("处理人", "Decided by"),
    "appeal.until": ("申诉期限", "Appeal until"),
    "appeal.decide": ("作出决定", "Decide"),
    "appeal.uphold": ("维持告知单", "Uphold the ticket"),
    "appeal.void": ("撤销告知单", "Void the ticket"),
    "appeal.record": ("登记电话申诉", "Record an appeal received by phone"),
    "appeal.caller_plate": ("来电人报的车牌", "Plate the caller gave"),
    "appeal.attachments_hint": ("每行一个 https 链接，最多5个", "one https URL per line, at most 5"),
    "appeal.submit": ("登记申诉", "Record the appeal"),
    "appeal.none": ("此告知单没有申诉。", "No appeal against this ticket."),
    "evidence.title": ("证据", "Evidence"),
    "evidence.violation": ("违停抓拍", "Violation"),
    "evidence.still_there": ("期限后抓拍", "After the deadline"),
    "evidence.integrator": ("接入方", "Integrator"),
    "evidence.image": ("图像", "Image"),
    "evidence.not_obtained": ("未获取到图像", "Image not obtained"),
    "evidence.warning": ("告知短信", "Warning SMS"),
    "evidence.accepted": ("网关接收", "accepted"),
    "evidence.delivered": ("送达", "delivered"),
    "evidence.rule": ("依据", "Rule"),
    "evidence.code": ("核验码", "Verification code"),
    "done.appeal_filed": ("申诉已登记。", "The appeal is recorded."),
    "done.appeal_decided": ("申诉已处理，已短信通知车主。", "The appeal is decided; the owner is told by SMS."),
    "appeal_refused.bad_ground": ("请选择申诉理由", "Choose a ground"),
    "appeal_refused.statement_too_long": ("陈述不能超过{max}字", "The statement is longer than {max} characters"),
    "appeal_refused.statement_needed": ("选择“其他”时请写明理由", "Say why, for the ground 'other'"),
    "appeal_refused.too_many_attachments": ("附件最多{max}个", "At most {max} attachments"),
    "appeal_refused.attachment_not_https": ("附件须为 https 链接：{url}", "Attachments must be https URLs: {url}"),
    "appeal_refused.ticket_void": ("告知单已作废", "The ticket is void"),
    "appeal_refused.already_appealed": ("此告知单已有申诉", "This ticket has been appealed already"),
    "appeal_refused.window_closed": ("申诉期限已过（{until}）", "The appeal window closed ({until})"),
    "appeal_refused.already_decided": ("此申诉已处理", "This appeal is decided already"),
    "appeal_refused.bad_outcome": ("请选择处理结果", "Choose an outcome"),
    "appeal_refused.not_found": ("未找到：请核对告知单号、车牌和查询码", "Not found: check the ticket number, plate and code"),
    "appeal_refused.no_ticket": ("没有这张告知单", "No such ticket"),
    "appeal_refused.plate_mismatch": ("车牌与告知单不符", "The plate is not the ticket's"),
    "appeal_refused.no_appeal": ("没有这个申诉", "No such appeal"),
    "appeal_refused.too_many_photos": ("照片最多{max}张", "At most {max} photos"),
    "appeal_refused.photo_too_big": ("每张照片不超过{max_mb} MB", "Each photo must be under {max_mb} MB"),
    "appeal_refused.photo_type": ("照片须为 JPEG、PNG 或 HEIC 图片", "Photos must be JPEG, PNG or HEIC images"),
    "appeal.photos": ("照片", "Photos"),
}

ACTION = {"appeal_filed": ("提出申诉", "appealed"), "appeal_decided": ("处理申诉", "decided the appeal")}
SMS_KIND = {"appeal_decision": ("申诉结果通知", "appeal decision"),
            "appeal_received": ("申诉受理通知", "appeal received")}


def install() -> None:
    """Add these words to the console's catalogue (idempotent)."""
    i18n.TEXT.update(TEXT)
    i18n.TEXT.update({f"ground.{k}": v for k, v in GROUNDS.items()})
    i18n.TEXT.update({f"outcome.{k}": v for k, v in OUTCOMES.items()})
    i18n.TEXT.update({f"channel.{k}": v for k, v in CHANNELS.items()})
    i18n.ACTION.update(ACTION)
    i18n.SMS_KIND.update(SMS_KIND)
