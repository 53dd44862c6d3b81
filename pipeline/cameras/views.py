"""The console's Cameras page (/console/cameras): every operator sees the registry, supervisors
register, change and remove cameras with a reason (each change in ``audit_log``)."""

from pathlib import Path

from aiohttp import web
from jinja2 import ChoiceLoader, FileSystemLoader

from pipeline.cameras import registry
from pipeline.cameras.registry import CameraProblem
from pipeline.console import i18n
from pipeline.console.actions import Refused, check_reason
from pipeline.console.views import guarded

HERE = Path(__file__).parent

WORDS: dict[str, tuple[str, str]] = {
    "nav.cameras": ("摄像头", "Cameras"),
    "cameras.title": ("摄像头登记", "Camera registry"),
    "cameras.hint": ("只接收登记摄像头的所属接入方发送的事件；地点、区域和位置以登记为准，不取自事件。变更约2秒内生效。",
                     "Events are taken only from the integrator that owns the camera; place, zone and position come "
                     "from here, never from the event. Changes apply within about 2 s."),
    "cameras.id": ("编号", "Id"),
    "cameras.integrator": ("接入方", "Integrator"),
    "cameras.place": ("地点", "Place"),
    "cameras.zone": ("区域", "Zone"),
    "cameras.zone_by_position": ("留空则按位置", "empty: by position"),
    "cameras.position": ("位置（WGS-84）", "Position (WGS-84)"),
    "cameras.direction": ("朝向", "Looks"),
    "cameras.commissioned": ("启用日期", "Commissioned"),
    "cameras.add": ("登记摄像头", "Register a camera"),
    "cameras.replace": ("如已登记则修改", "change it if registered already"),
    "cameras.remove": ("注销", "Remove"),
    "cameras.count": ("共 {n} 个摄像头", "{n} cameras"),
    "done.camera_added": ("摄像头已登记。", "Camera registered."),
    "done.camera_updated": ("摄像头已修改。", "Camera changed."),
    "done.camera_removed": ("摄像头已注销。", "Camera removed."),
    "refused.camera": ("无法登记：{problem}", "Not registered: {problem}"),
    "refused.no_camera": ("没有登记的摄像头 {camera}。", "No registered camera {camera}."),
}
i18n.TEXT.update(WORDS)


class CameraPages:
    def __init__(self, console):
        self.console = console
        self.session_of = console.session_of  # what ``guarded`` asks of a page
        self.message = console.message

    async def page(self, request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
        t = self.console.words(request)
        done = request.query.get("done")
        pool = await self.console.db()
        async with pool.acquire() as conn:
            cameras = await registry.listing(conn)
            integrators = await registry.integrator_names(conn)
        return self.console.render(
            request, "cameras.html", status, title=t("cameras.title"), nav="cameras", cameras=cameras,
            integrators=integrators, directions=registry.DIRECTIONS, error=error,
            notice=t(f"done.{done}") if done in ("camera_added", "camera_updated", "camera_removed") else None)

    @guarded()
    async def listing(self, request: web.Request) -> web.Response:
        return await self.page(request)

    async def _act(self, request: web.Request, work) -> web.Response:
        t = self.console.words(request)
        try:
            reason = check_reason(str(request["form"].get("reason", "")))
            pool = await self.console.db()
            async with pool.acquire() as conn:
                done = await work(conn, request["session"].operator.actor, reason)
        except Refused as refused:
            return await self.page(request, 409, t(f"refused.{refused.key}", **refused.params))
        except CameraProblem as problem:
            return await self.page(request, 409, t("refused.camera", problem=str(problem)))
        raise web.HTTPSeeOther(f"/console/cameras?done=camera_{done}")

    @guarded(act=True)
    async def add(self, request: web.Request) -> web.Response:
        form = request["form"]

        async def work(conn, actor, reason):
            cam = registry.camera({k: form.get(k) for k in registry.FIELDS if k in form})
            return await registry.add(conn, cam, actor, replace=form.get("replace") == "on", reason=reason)
        return await self._act(request, work)

    @guarded(act=True)
    async def remove(self, request: web.Request) -> web.Response:
        camera_id = request.match_info["camera_id"]

        async def work(conn, actor, reason):
            if not await registry.remove(conn, camera_id, actor, reason):
                raise Refused("no_camera", camera=camera_id)
            return "removed"
        return await self._act(request, work)


def register(app, console) -> CameraPages:
    """Add the Cameras page to the console (the Faust app's web server) and its templates."""
    pages = CameraPages(console)
    console.templates.loader = ChoiceLoader([console.templates.loader, FileSystemLoader(HERE / "templates")])
    router = app.web.web_app.router
    router.add_get("/console/cameras", pages.listing)
    router.add_post("/console/cameras", pages.add)
    router.add_post("/console/cameras/{camera_id}/remove", pages.remove)
    return pages
