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
