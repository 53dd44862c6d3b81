"""The console's words in Chinese (the default) and English, side by side so that neither falls behind."""

from pipeline.cases import reasons

LANGUAGES = ("zh", "en")
DEFAULT = "zh"

TEXT: dict[str, tuple[str, str]] = {
    # frame
    "console": ("违停告知控制台", "Parking console"),
    "nav.live": ("实时", "Live"),
    "nav.cases": ("案件查询", "Cases"),
    "nav.audit": ("操作记录", "Audit log"),
    "nav.confirm": ("待确认告知单", "To confirm"),
    "nav.rules": ("白名单与区域", "Whitelist & zones"),
    "quick_find": ("车牌或告知单号", "Plate or ticket no."),
    "find": ("查找", "Find"),
    "logout": ("退出", "Log out"),
    "role.viewer": ("查看员", "viewer"),
    "role.supervisor": ("主管", "supervisor"),
    "switch_language": ("English", "中文"),
    "live_connected": ("实时更新中", "live"),
    "live_lost": ("连接中断，正在重连…", "connection lost, reconnecting…"),
    "none": ("无", "none"),
    "back": ("返回", "back"),
    # login
    "login.title": ("操作员登录", "Operator login"),
    "login.name": ("用户名", "Name"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Log in"),
    "login.failed": ("用户名或密码不正确", "Wrong name or password"),
    "login.locked": ("该用户名从此地址登录失败次数过多，请{minutes}分钟后再试，或请管理员重设密码"
                     "（parkwarden operators add 用户名 --replace）",
                     "Too many failed logins for this name from this address: try again in {minutes} min, or ask "
                     "an administrator to reset the password (parkwarden operators add NAME --replace)"),
    "login.address_limited": ("此地址登录尝试过于频繁，请稍候再试",
                              "Too many login attempts from this address: wait a moment and try again"),
    "login.busy": ("服务器正忙于核对其他登录，请稍后再试", "The server is busy checking other logins: try again in a moment"),
    "login.expired": ("请先登录", "Please log in"),
    # live
    "live.title": ("实时概况", "Live overview"),
    "tile.events_per_second": ("事件/秒", "events / s"),
    "tile.events_per_second.hint": ("近10秒接收的摄像头事件", "camera events received, last 10 s"),
    "tile.warnings_today": ("今日告知短信", "warnings sent today"),
    "tile.held_for_input": ("待输入的判定（落后{seconds}秒）", "decisions waiting for input ({seconds} s behind)"),
    "tile.held_for_input.hint": ("截止时间已到，但该车牌所在分区尚未读到截止时间之后：等待途中的抓拍，不盲判",
                                 "due, but the partition carrying the plate is not read past the deadline yet: "
                                 "waiting for captures on their way, not deciding blind"),
    "banner.stale_integrators": ("以下接入方的摄像头事件读取落后超过{limit}秒，判定不再等待它们（其摄像头附近的案件除外）：",
                                 "These integrators' camera events are read more than {limit} s behind; decisions no "
                                 "longer wait for them (except cases near their cameras):"),
    "banner.stale_integrator": ("{name}（落后{seconds}秒，自{since}起）", "{name} ({seconds} s behind, since {since})"),
    "tile.moved_today": ("今日已驶离", "cars moved today"),
    "tile.tickets_today": ("今日告知单", "tickets today"),
    "tile.voided": ("已作废 {n}", "{n} voided"),
    "tile.dead_letters_today": ("今日无效消息", "dead letters today"),
    "tile.open_cases": ("进行中案件", "open cases"),
    "tile.review_cases": ("待审核", "waiting for review"),
    "tile.to_confirm": ("待确认告知单", "tickets to confirm"),
    "tile.cautions_today": ("今日首违/试运行警告", "warning notices today"),
    "tile.outbox_set_aside": ("Kafka 拒收的输出（已搁置）", "outputs Kafka refused (set aside)"),
    "tile.outbox_set_aside.hint": ("原因见 parkwarden outbox list；修复后用 parkwarden outbox retry 重发",
                                   "why: parkwarden outbox list; send again once fixed: parkwarden outbox retry"),
    "open.title": ("进行中案件", "Open cases"),
    "open.more": ("仅显示前 {shown} 个，共 {total} 个", "showing {shown} of {total}"),
    "open.empty": ("当前没有进行中的案件", "No open case right now"),
    "col.plate": ("车牌", "Plate"),
    "col.state": ("状态", "State"),
    "col.zone": ("区域", "Zone"),
    "col.place": ("地点", "Place"),
    "col.camera": ("摄像头", "Camera"),
    "col.detected": ("发现时间", "Detected"),
    "col.deadline": ("驶离期限", "Deadline"),
    "col.time_left": ("剩余时间", "Time left"),
    "col.closed": ("结束时间", "Closed"),
    "col.ticket": ("告知单", "Ticket"),
    "col.reason": ("原因", "Reason"),
    "col.time": ("时间", "Time"),
    "col.actor": ("操作人", "Actor"),
    "col.action": ("操作", "Action"),
    "col.case": ("案件", "Case"),
    "col.free": ("空位", "Free"),
    "col.capacity": ("车位", "Spaces"),
    "col.occupancy": ("占用率", "Occupancy"),
    "col.reported": ("更新于", "Reported"),
    "left.awaiting_sms": ("等待短信发出", "waiting for the SMS"),
    "left.recheck": ("复拍等待至 {at}", "recheck until {at}"),
    "left.overdue": ("已到期", "due"),
    "parks.title": ("停车场占用", "Car-park occupancy"),
    "parks.no_count": ("暂无数据", "no count yet"),
    "drive.title": ("告知后按时驶离率（近24小时，按区域与告知时段）",
                    "Drive-away rate: warned cars that left in time (last 24 h, by zone and hour warned)"),
    "drive.hint": ("分母为已知结果的告知案件（按时驶离、开单或警告、逾期驶离）；未确认与撤销的案件不计。",
                   "Out of warned cases with a known outcome (left in time, ticketed or given a warning notice, left late); "
                   "unconfirmed and cancelled cases are not counted."),
    "drive.empty": ("近24小时没有已有结果的告知案件", "No warned case with an outcome in the last 24 hours"),
    "drive.total": ("合计", "total"),
    "recent.title": ("最近的决定", "Recent decisions"),
    # search
    "search.title": ("案件查询", "Find cases"),
    "search.plate": ("车牌（可部分）", "Plate (or part)"),
    "search.ticket": ("告知单号", "Ticket number"),
    "search.camera": ("摄像头", "Camera"),
    "search.zone": ("区域", "Zone"),
    "search.state": ("状态", "State"),
    "search.since": ("发现时间从", "Detected from"),
    "search.until": ("至", "to"),
    "search.any": ("全部", "any"),
    "search.submit": ("查询", "Search"),
    "search.results": ("{n} 个案件", "{n} case(s)"),
    "search.limit": ("最多显示 {n} 个，请缩小范围", "at most {n} shown: narrow the search"),
    "search.nothing": ("没有符合条件的案件", "No case matches"),
    "search.bad_time": ("时间格式不正确", "That time is not valid"),
    # case page
    "case.title": ("案件 {plate}", "Case {plate}"),
    "case.unknown": ("没有这个案件", "No such case"),
    "case.violation": ("违停抓拍", "Violation"),
    "case.opened": ("立案", "Opened"),
    "case.warned": ("告知短信发出", "Warning accepted"),
    "case.delivered": ("告知短信送达", "Warning delivered"),
    "case.from_delivery": ("自送达起算", "counted from delivery"),
    "case.from_acceptance": ("自网关接收起算", "counted from acceptance"),
    "case.zone_rule": ("区域规则", "Zone rule"),
    "case.confirm_rule": ("本区域告知单须经执法人员确认后生效", "In this zone a ticket takes effect once an officer confirms it"),
    "case.deadline": ("驶离期限", "Deadline"),
    "case.closed": ("结案", "Closed"),
    "case.reason": ("结论", "Outcome"),
    "case.window": ("驶离时限", "Window"),
    "case.ticket": ("告知单", "Ticket"),
    "case.ticket_issued": ("开具于 {at}", "issued {at}"),
    "case.ticket_void": ("已作废（{at}）：{reason}", "void since {at}: {reason}"),
    "case.evidence": ("证据", "Evidence"),
    "case.image": ("图片", "image"),
    "evidence.photo_pending": ("图片获取中", "image being fetched"),
    "evidence.not_obtained": ("未获取到图片", "image not obtained"),
    "evidence.mismatch": ("图片与抓拍的SHA-256不符", "image does not match the capture's SHA-256"),
    "case.changed": ("案件已更新。刷新页面后再操作。", "The case changed. Reload the page before acting."),
    "case.reload": ("刷新", "Reload"),
    "case.warned_again_as": ("已重新告知，新案件：", "Warned again as case:"),
    "timeline.title": ("时间线", "Timeline"),
    "timeline.capture": ("抓拍", "capture"),
    "timeline.sms": ("短信", "SMS"),
    "timeline.decision": ("系统决定", "decision"),
    "timeline.operator": ("人工操作", "operator"),
    "timeline.unlinked": ("结案后收到，未关联", "received after closing, not linked"),
    "timeline.received": ("接收于 {at}", "received {at}"),
    "sms.phone": ("号码", "phone"),
    "sms.attempts": ("尝试 {n} 次", "{n} attempt(s)"),
    "sms.accepted_at": ("网关接收 {at}", "accepted {at}"),
    "sms.delivered_at": ("送达 {at}", "delivered {at}"),
    "sms.failed_at": ("失败 {at}", "failed {at}"),
    "sms.report": ("回执", "report"),
    # actions
    "actions.title": ("处理", "Actions"),
    "actions.viewer": ("查看员不能操作案件。", "Viewers cannot act on cases."),
    "actions.none": ("此案件当前没有可执行的操作。", "Nothing to do on this case now."),
    "actions.reason": ("原因（必填，记入操作记录）", "Reason (required, goes to the audit log)"),
    "actions.void": ("作废告知单", "Void the ticket"),
    "actions.close": ("撤销案件", "Close the case"),
    "actions.review": ("审核处理", "Resolve the review"),
    "actions.warn_again": ("重新发送告知短信", "Warn again"),
    "actions.warn_again.hint": ("以新案件重新告知；到期后仍须有新抓拍才会开单。",
                                "Opens a new case that warns the owner; a ticket still needs a fresh capture after its deadline."),
    "actions.ticket": ("依据新抓拍开单", "Ticket with evidence"),
    "actions.ticket.hint": ("需同一地点、拍摄于 {earliest} 至 {latest} 之间（驶离期限前后）的抓拍，违停后无驶离记录。",
                            "Needs a capture at the same place taken between {earliest} and {latest} (around the "
                            "driver's deadline), with no departure since the violation."),
    "actions.ticket.none": ("暂无可用的新抓拍。可请求摄像头复拍。", "No fresh capture yet. Ask the camera for one."),
    "actions.recheck": ("请求摄像头复拍", "Ask the camera for a fresh capture"),
    "actions.close_review": ("不予处理并结案", "Close without action"),
    "actions.evidence": ("新抓拍", "Fresh capture"),
    "actions.confirm": ("确认告知单", "Confirm the ticket"),
    "actions.reject": ("驳回（不生效）", "Reject (never takes effect)"),
    "evidence.violation": ("违停抓拍", "Violation"),
    "evidence.fresh": ("期限时的抓拍", "Capture at the deadline"),
    "evidence.between": ("两次抓拍相距 {m} 米，间隔 {s}", "{m} m and {s} apart"),
    "confirm.title": ("待确认告知单", "Tickets to confirm"),
    "confirm.hint": ("这些告知单须经执法人员核对两张抓拍后确认才生效（开具、发布并短信通知车主）；驳回则不生效。",
                     "These tickets take effect (issued, published, sent to the owner) only once an officer has "
                     "checked both captures and confirms them; a rejected one never does."),
    "confirm.count": ("{n} 张待确认", "{n} waiting"),
    "confirm.empty": ("没有待确认的告知单", "No ticket waiting for confirmation"),
    "confirm.waiting_since": ("等待自 {at}", "waiting since {at}"),
    "done.void_ticket": ("告知单已作废。", "Ticket voided."),
    "done.close_case": ("案件已撤销。", "Case closed."),
    "done.warn_again": ("已重新告知（新案件）。", "Warned again (new case)."),
    "done.ticket_on_review": ("已开具告知单。", "Ticket issued."),
    "done.request_recheck": ("已请求复拍。", "Fresh capture requested."),
    "done.whitelist_add": ("已加入白名单。", "Plate whitelisted."),
    "done.whitelist_remove": ("已移出白名单。", "Plate removed from the whitelist."),
    "done.zone_exempt": ("区域已豁免。", "Zone exempted."),
    "done.zone_exemption_lifted": ("已取消区域豁免。", "Zone exemption lifted."),
    "done.confirm_ticket": ("告知单已确认并生效。", "Ticket confirmed: it takes effect."),
    "done.reject_ticket": ("告知单已驳回。", "Ticket rejected."),
    "done.zone_rules": ("区域规则已保存。", "Zone rules saved."),
    # refusals (actions.Refused keys)
    "refused.reason_missing": ("请填写原因（至少 {min} 个字）。", "Give a reason (at least {min} characters)."),
    "refused.reason_too_long": ("原因最多 {max} 个字。", "A reason has at most {max} characters."),
    "refused.supervisors_only": ("只有主管可以操作。", "Only supervisors can act."),
    "refused.csrf": ("表单已过期，请刷新页面后重试。", "The form expired: reload the page and try again."),
    "refused.no_ticket": ("没有这张告知单。", "No such ticket."),
    "refused.ticket_already_void": ("告知单已作废。", "The ticket is void already."),
    "refused.case_not_open": ("案件已结束（{state}），不能撤销。", "The case is closed already ({state})."),
    "refused.not_in_review": ("案件不在待审核状态（{state}）。", "The case is not waiting for review ({state})."),
    "refused.no_phone": ("车主仍无登记手机号，无法告知。", "Still no phone on record for the owner: cannot warn."),
    "refused.car_left": ("违停后已记录驶离，无需再告知。", "A departure was seen after the violation: no need to warn."),
    "refused.plate_has_open_case": ("该车牌已有进行中的案件。", "The plate has an open case already."),
    "refused.evidence_unknown": ("没有这条抓拍。", "No such capture."),
    "refused.evidence_is_the_violation": ("违停抓拍本身不能作为新证据。", "The violation itself is not fresh evidence."),
    "refused.evidence_elsewhere": ("抓拍不在违停地点。", "The capture is not at the place of the violation."),
    "refused.evidence_too_early": ("抓拍早于驶离期限。", "The capture was taken before the driver's deadline."),
    "refused.evidence_in_future": ("抓拍时间晚于当前时间。", "The capture is stamped in the future."),
    "refused.evidence_too_late": ("抓拍距驶离期限过久，不能证明期限时车仍在原地。",
                                  "The capture is too long after the deadline: it does not show the car there then."),
    "refused.not_to_confirm": ("案件不在待确认状态（{state}）。", "The case has no ticket waiting for confirmation ({state})."),
    "refused.bad_zone_rule": ("{name} 应为 0 到 {top} 的整数（或留空使用全市默认）。",
                              "{name} must be a whole number from 0 to {top} (or empty for the city's default)."),
    "refused.evidence_after_departure": ("违停后已记录驶离，抓拍不能证明持续违停。",
                                         "A departure was seen after the violation: the capture does not show the car stayed."),
    "refused.already_ticketed": ("案件已有告知单。", "The case has a ticket already."),
    "refused.bad_plate": ("车牌无效：{problem}", "Not a valid plate: {problem}"),
    "refused.already_whitelisted": ("{plate} 已在白名单中。", "{plate} is whitelisted already."),
    "refused.not_whitelisted": ("{plate} 不在白名单中。", "{plate} is not whitelisted."),
    "refused.unknown_zone": ("没有区域 {zone}。", "No zone {zone}."),
    "refused.zone_not_exempt": ("区域 {zone} 未被豁免。", "Zone {zone} is not exempt."),
    "refused.unknown_case": ("没有这个案件。", "No such case."),
    # audit
    "audit.title": ("操作记录", "Audit log"),
    "audit.operators_only": ("仅人工操作", "operators only"),
    "audit.everything": ("全部记录", "everything"),
    "audit.hint": ("操作记录只增不改。", "The audit log is append-only."),
    # rules
    "rules.title": ("白名单与区域", "Whitelist and zones"),
    "rules.whitelist": ("白名单车牌（不予处理）", "Whitelisted plates (never pursued)"),
    "rules.add_plate": ("加入白名单", "Whitelist a plate"),
    "rules.remove": ("移出", "Remove"),
    "rules.zones": ("区域", "Zones"),
    "rules.exempt": ("豁免此区域", "Exempt this zone"),
    "rules.lift": ("取消豁免", "Lift the exemption"),
    "rules.exempt_since": ("豁免：{reason}", "exempt: {reason}"),
    "rules.pursued": ("正常处理", "pursued"),
    "rules.hours": ("仅在以下时段豁免（可留空，0–24时）", "only between these hours (optional, 0-24)"),
    "refused.bad_hours": ("时段应为0–24之间的两个不同整点", "hours must be two different whole hours from 0 to 24"),
    "rules.window": ("时限 {window}", "window {window}"),
    "rules.added": ("加入于", "Added"),
    "rules.first_offence": ("首违警告：近{n}个月无记录（0为不启用）", "first-offence warning: none in {n} months (0: off)"),
    "rules.new_camera": ("新摄像头前{n}天只警告", "new cameras warn only for {n} days"),
    "rules.confirm_on": ("告知单须确认", "tickets confirmed by an officer"),
    "rules.confirm_off": ("告知单自动生效", "tickets take effect at once"),
    "rules.zone_rules": ("区域规则", "Zone rules"),
    "rules.first_offence_months": ("首违警告（月）", "first offence (months)"),
    "rules.new_camera_days": ("新摄像头只警告（天）", "new camera warns only (days)"),
    "rules.confirm_tickets": ("告知单须确认", "tickets need confirmation"),
    "rules.city_default": ("全市默认", "city default"),
    "rules.yes": ("是", "yes"),
    "rules.no": ("否", "no"),
    "rules.save": ("保存", "Save"),
    "rules.area": ("区域范围", "area"),
    "rules.road": ("路段，宽{width}米", "road segment, {width} m wide"),
    "rules.no_shape": ("未划定范围", "no shape"),
    "rules.cameras": ("区域内摄像头", "Cameras in the zone"),
    "rules.by_position": ("按位置", "by position"),
    "rules.given": ("人工指定", "given"),
    "rules.outside": ("不在任何区域范围内的摄像头", "Cameras in no zone's shape"),
    "rules.outside_hint": ("这些摄像头使用登记时人工指定的区域。", "These cameras take the zone given when they were registered."),
    "rules.unknown_zone": ("区域未定义，按全市默认规则", "unknown zone: the city's default rules"),
    "rules.hint": ("新规则约2秒内对新发现的违停生效；已有案件不受影响。",
                   "New rules apply to violations detected from about 2 s later; existing cases are not changed."),
    # errors
    "error.forbidden": ("没有权限", "Not allowed"),
    "error.not_found": ("页面不存在", "Not found"),
}

# The Chinese for every reason in pipeline.cases.reasons.REASONS, with the same parameters.
REASON_ZH = {
    "too_late": "违停发生{minutes}分钟后才上报：来不及告知，由执法人员处理",
    "decision_failed": "系统无法判定此案件（{detail}）：由执法人员处理",
    "too_long": "短信长{units}个单位，超过一条短信",
    "kannel_unreachable": "无法连接 Kannel（{error}）；是否已启动？scripts/services.sh status",
    "kannel_no_answer": "请求已发往 Kannel，但未收到应答（{error}）",
    "kannel_credentials": "Kannel 拒绝了我们的账号（403）：请检查 PW_KANNEL_USERNAME/PASSWORD",
    "kannel_refused": "Kannel 拒收该短信（400）：{answer}",
    "kannel_answered": "Kannel 返回 {status}：{answer}",
    "provider_unreachable": "无法连接短信服务商（{error}）",
    "provider_answered": "短信服务商返回 {status}",
    "provider_refused": "短信服务商拒收该短信（{status}）：{answer}",
    "kannel_not_routable": "Kannel 拒收该短信，无法路由（403）：{answer}",
    "provider_credentials": "短信服务商拒绝了我们的令牌（{status}）：请检查 PW_SMS_HTTP_TOKEN",
    "sent_again": "发送情况不明，未记录网关应答，也没有回执：将重发",
    "gateway_horizon": "短信网关在{seconds}秒内未接收该短信：{detail}",
    "set_aside": "短信已搁置：{error}",
    "no_phone": "车主无登记手机号：由执法人员处理",
    "not_registered": "号牌不在机动车登记库中：由执法人员处理",
    "plate_type_ambiguous": "该号码在摄像头识别的号牌颜色下登记了多种号牌种类：由执法人员处理",
    "plate_type_mismatch": "该号码未按摄像头识别的号牌种类登记：由执法人员处理",
    "vehicle_colour_mismatch": "车身颜色与登记不符（可能误识别号牌）：由执法人员处理",
    "no_valid_contact": "车主当前无有效联系电话：由执法人员处理",
    "sms_opt_out": "车主手机号已退订短信：由执法人员处理",
    "whitelisted": "白名单车辆：{detail}",
    "exempt_zone": "豁免区域：{detail}",
    "exempt_hours": "区域豁免时段{start}—{until}时：{detail}",
    "already": "案件当前状态：{state}",
    "capture_before_violation": "抓拍早于违停：仅作记录",
    "seen_elsewhere_after_deadline": "截止后在别处被拍到，原地无新抓拍：不开单",
    "seen_elsewhere": "在别处被拍到（{where}）：车已驶离",
    "older_capture": "原地较早的抓拍：留作证据",
    "capture_same_place": "原地抓拍",
    "capture_in_future": "抓拍时间晚于当前时间（摄像头时钟超前）：不作证据",
    "left_known": "截止后已记录过更早的驶离",
    "left_after_deadline_kept": "截止后驶离：到期时依据此前的抓拍判定",
    "settling": "等待此前拍摄的事件到达",
    "same_stay": "在案件（{state}）原地再次被拍到（同一次停放）：留作证据",
    "departure_after_ticket": "截止前的驶离记录在开单后才到：待复核",
    "departure_before_violation": "驶离早于违停：忽略",
    "left_after_deadline": "截止后、新抓拍前驶离：不开单",
    "left_in_window": "在时限内驶离",
    "accepted_already": "网关接收告知短信时，案件状态：{state}",
    "failed_already": "告知短信失败时，案件状态：{state}",
    "warning_failed": "告知短信发送失败：{detail}",
    "daily_limit": "该手机号今日短信已达上限{n}条",
    "delivery_known": "送达情况已知",
    "delivered": "告知短信已送达手机",
    "delivered_late": "告知短信送达晚于网关接收：驶离期限顺延至{deadline}",
    "awaiting_delivery": "等待告知短信送达手机的回执",
    "delivery_unknown": "未收到告知短信送达手机的回执：由执法人员处理",
    "undelivered_already": "收到未送达报告时，案件状态：{state}",
    "undelivered": "告知短信未送达：{detail}",
    "not_due": "未到时间",
    "recheck_requested": "截止时无新抓拍：已请求摄像头复拍",
    "unconfirmed": "请求复拍后仍无新抓拍：不开单",
    "never_delivered": "截止时车仍在原地，但告知短信未确认送达：由执法人员处理",
    "still_there": "截止时车仍在原地",
    "first_offence": "近{n}个月无告知单或警告记录：首违警告，不开告知单",
    "new_camera": "摄像头{where}于{day}启用，处于前{n}天试运行期：予以警告，不开告知单",
    "to_confirm": "{detail}：告知单须经执法人员确认后生效",
    "still_there_recheck": "截止后复拍确认车仍在原地",
    "warned_again": "已重新告知（新案件{case_id}）：{detail}",
    "ticketed_on_review": "审核后开单：{detail}",
    "confirmed": "执法人员确认告知单：{detail}",
    "rejected": "执法人员驳回告知单：{detail}",
}

STATE = {
    "detected": ("已发现", "detected"),
    "warned": ("已告知", "warned"),
    "rechecking": ("复拍中", "rechecking"),
    "moved": ("已驶离", "moved"),
    "ticketed": ("已开单", "ticketed"),
    "unconfirmed": ("未确认", "unconfirmed"),
    "review": ("待审核", "review"),
    "exempt": ("豁免", "exempt"),
    "cancelled": ("已撤销", "cancelled"),
    "cautioned": ("已警告", "warning notice"),
    "to_confirm": ("待确认", "to confirm"),
    "rejected": ("已驳回", "rejected"),
}

SMS_STATUS = {
    "pending": ("待发送", "pending"),
    "sending": ("发送中", "sending"),
    "accepted": ("网关已接收", "accepted"),
    "delivered": ("已送达", "delivered"),
    "undelivered": ("未送达", "undelivered"),
    "failed": ("发送失败", "failed"),
    "withdrawn": ("已撤回", "withdrawn"),
}

SMS_KIND = {"warning": ("驶离提醒", "warning"), "ticket": ("告知单通知", "ticket notice"),
            "caution": ("警告通知", "warning notice")}

CAPTURE = {
    "ViolationDetected": ("违停抓拍", "violation"),
    "VehicleObserved": ("车辆抓拍", "sighting"),
    "VehicleDeparted": ("驶离抓拍", "departure"),
}

ACTION = {
    "void_ticket": ("作废告知单", "voided the ticket"),
    "close_case": ("撤销案件", "closed the case"),
    "warn_again": ("重新告知", "warned again"),
    "ticket_on_review": ("审核开单", "ticketed on review"),
    "request_recheck": ("请求复拍", "asked for a fresh capture"),
    "whitelist_add": ("加入白名单", "whitelisted a plate"),
    "whitelist_remove": ("移出白名单", "removed a plate from the whitelist"),
    "zone_exempt": ("豁免区域", "exempted a zone"),
    "zone_exemption_lifted": ("取消区域豁免", "lifted a zone exemption"),
    "confirm_ticket": ("确认告知单", "confirmed the ticket"),
    "reject_ticket": ("驳回告知单", "rejected the ticket"),
    "zone_rules": ("修改区域规则", "changed a zone's rules"),
    "noted": ("记录", "noted"),
    "evidence": ("新增证据", "evidence added"),
    "updated": ("更新", "updated"),
    "decided_without": ("未等待落后的接入方即判定", "decided without a stale integrator"),
    "integrator_stale": ("接入方读取落后，判定不再等待", "integrator stale: decisions no longer wait for it"),
    "integrator_current": ("接入方已追上", "integrator caught up"),
}


def _pick(pair: tuple[str, str], lang: str) -> str:
    return pair[0] if lang == "zh" else pair[1]


class Words:
    """The console's words in one language; templates call it: ``t("login.title")``."""

    def __init__(self, lang: str):
        self.lang = lang if lang in LANGUAGES else DEFAULT

    def __call__(self, key: str, **params) -> str:
        pair = TEXT.get(key)
        text = _pick(pair, self.lang) if pair else key
        return text.format(**params) if params else text

    def state(self, state: str) -> str:
        return _pick(STATE[state], self.lang) if state in STATE else state

    def reason(self, text: str | None) -> str:
        """A reason the pipeline wrote (English, from ``pipeline.cases.reasons``) in this language;
        other text (an operator's words, a gateway's error) as it is."""
        if not text or self.lang != "zh":
            return text or ""
        parsed = reasons.parse(text)
        if parsed is None or parsed[0] not in REASON_ZH:
            return text
        key, params = parsed
        for name, value in params.items():
            params[name] = self.state(value) if name == "state" else self.reason(value) if name == "detail" else value
        return REASON_ZH[key].format(**params)

    def sms_status(self, status: str) -> str:
        return _pick(SMS_STATUS[status], self.lang) if status in SMS_STATUS else status

    def sms_kind(self, kind: str) -> str:
        return _pick(SMS_KIND[kind], self.lang) if kind in SMS_KIND else kind

    def capture(self, kind: str) -> str:
        return _pick(CAPTURE[kind], self.lang) if kind in CAPTURE else kind

    def action(self, action: str) -> str:
        """Audit actions: operator actions by name, the pipeline's as ``a->b`` or ``opened:x``."""
        if action in ACTION:
            return _pick(ACTION[action], self.lang)
        if "->" in action:
            before, after = action.split("->", 1)
            return f"{self.state(before)} → {self.state(after)}"
        if action.startswith("opened:"):
            return ("立案：" if self.lang == "zh" else "opened: ") + self.state(action.split(":", 1)[1])
        return action
