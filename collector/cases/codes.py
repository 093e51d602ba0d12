"""The 数字城管 classification codes Lifeline uses (GB/T 30428.2-2013, CJJ/T 106-2010).

A 部件 (city component) 小类 is 大类 (2 digits) + 小类 (2 digits), the middle of its 16-digit
部件标识码 (6-digit area code + 大类 + 小类 + 6-digit serial). 事件 (events) use the same four-digit
form with their own 大类. Only the codes that the shipped routing table and demo use are named
here; any other four-digit code is accepted and shown as its digits.

部件 大类 01 公用设施 and 02 道路交通, 事件 大类 04 突发事件, as listed in the standard's annex and
as city platforms carry them (the list of a 数字城管 reference app, read 2026-11, has the same
numbers for every code below):
"""

COMPONENT_NAMES: dict[str, str] = {
    "0101": "上水井盖",
    "0102": "污水井盖",
    "0103": "雨水井盖",
    "0105": "电力井盖",
    "0107": "电信井盖",
    "0110": "热力井盖",
    "0111": "燃气井盖",
    "0117": "立杆",  # 电杆 in some cities' lists: poles carrying lamps, cameras, signs
    "0118": "路灯",
    "0205": "过街天桥",
    "0206": "地下通道",
    "0207": "高架立交桥",
    "0208": "跨河桥",
}

EVENT_NAMES: dict[str, str] = {
    "0401": "路面塌陷",
    "0402": "自来水管破裂",
    "0403": "燃气管道破裂",
    "0404": "下水道堵塞或破损",
    "0405": "热力管道破裂",
    "0406": "道路积水",
    "0407": "道路积雪结冰",
    "0408": "架空线缆损坏",
    "0499": "其他突发事件",
}

BRIDGES = ("0205", "0206", "0207", "0208")  # the 道路交通 structures a tilt sensor may watch


def subcategory_name(kind: str, code: str) -> str:
    """The name of a 小类 `code` of `kind` (部件 or 事件: the two number their 大类 apart, 部件
    0401 is 古树名木 and 事件 0401 路面塌陷), or the code itself if Lifeline does not name it."""
    names = EVENT_NAMES if kind == "事件" else COMPONENT_NAMES
    return names.get(code, code)


# 立案条件 and 结案条件 of each 小类 Lifeline names, after the 立案结案标准 of the standards'
# annexes (GB/T 30428.2-2013 附录, CJJ/T 106-2010) as city platforms word them: when a report
# becomes a case, and what the place must look like for the case to be closed.
_COVER = (
    "井盖丢失、破损、移位、松动或跳动，井框与路面高差超过 5 mm，危及行人或车辆安全",
    "井盖补齐、更换或复位，盖框稳固，与路面高差不超过 5 mm",
)
_STRUCTURE = (
    "结构破损、开裂、倾斜、位移或监测超限，危及通行安全",
    "结构修复或加固，监测值回到限值内，恢复安全通行",
)
CONDITIONS: dict[tuple[str, str], tuple[str, str]] = {
    **{("部件", code): _COVER for code in ("0101", "0102", "0103", "0105", "0107", "0110", "0111")},
    ("部件", "0117"): (
        "立杆倾斜、破损、锈蚀或基础松动，有倒伏危险",
        "立杆扶正、加固或更换，基础稳固，无倒伏危险",
    ),
    ("部件", "0118"): (
        "路灯不亮、损坏、缺失、漏电或供电异常",
        "路灯修复或更换，亮灯正常，无漏电隐患",
    ),
    **{("部件", code): _STRUCTURE for code in BRIDGES},
    ("事件", "0401"): (
        "路面出现塌陷、坑洞或明显沉降，影响通行安全",
        "塌陷处回填修复，路面平整，恢复通行",
    ),
    ("事件", "0402"): (
        "自来水管破裂、漏水或冒水，影响通行或供水",
        "管道修复，漏水停止，路面恢复",
    ),
    ("事件", "0403"): (
        "燃气管道或设施泄漏，可燃气体浓度超限或闻到燃气味",
        "泄漏点修复，现场检测可燃气体浓度低于报警值",
    ),
    ("事件", "0404"): (
        "下水道堵塞、破损、冒溢或井内水位超限",
        "疏通或修复完毕，排水通畅，井内水位回落",
    ),
    ("事件", "0405"): (
        "热力管道破裂、漏汽或漏水",
        "管道修复，泄漏停止，路面恢复",
    ),
    ("事件", "0406"): (
        "道路积水深度影响车辆或行人通行",
        "积水排除，道路恢复通行",
    ),
    ("事件", "0407"): (
        "道路积雪或结冰影响车辆或行人通行",
        "积雪清除、冰面处置，道路恢复安全通行",
    ),
    ("事件", "0408"): (
        "架空线缆断落、垂落或破损，危及安全",
        "线缆修复、规整或拆除，无安全隐患",
    ),
    ("事件", "0499"): (
        "其他突发事件危及公共安全或城市运行",
        "险情排除，现场恢复正常",
    ),
}


def conditions(kind: str, code: str) -> tuple[str, str]:
    """The (立案条件, 结案条件) of 小类 `code` of `kind` (部件 or 事件), or ('', '') for a 小类
    Lifeline does not name (the 值班长 then gives the condition in words)."""
    return CONDITIONS.get((kind, code), ("", ""))
