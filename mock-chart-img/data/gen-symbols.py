#!/usr/bin/env python3
"""Writes mock-chart-img/data/symbols.json, the built-in symbol catalogue, from:

- symbols-kept.yaml (beside this file): the hand-kept entries no data package lists (crypto pairs, TradingView's
  index, CFD and futures ids, a few stock exchanges);
- pytickersymbols (PyPI, MIT): the constituents of 20 stock indices (S&P 500, S&P 100, S&P 600, NASDAQ 100, DOW
  JONES, DAX, MDAX, SDAX, TecDAX, FTSE 100, CAC 40, CAC Mid 60, EURO STOXX 50, AEX, BEL 20, IBEX 35, NIKKEI 225,
  OMX Helsinki 25, OMX Stockholm 30, Switzerland 20) with their listings, as its own offline data;
- pycountry (PyPI, LGPL): ISO 4217 currency names, for the forex pairs.

Rules, not data: a listing's exchange is its Google Finance prefix or Yahoo suffix mapped to TradingView's id
(GOOGLE_PREFIX, YAHOO_SUFFIX), or, for US stocks listed without one, the `NYSE :` / `Nasdaq :` of Wikipedia's
"traded as" that pytickersymbols carries; forex pairs are every pair of the G10 currencies in the market's quoting
order, plus gold and silver against the dollar, on the FX and OANDA feeds; every USDT spot pair the
hand-kept list has on an exchange with USDT-margined perpetuals gets its `<PAIR>.P` perpetual (TradingView's
suffix). The v3 logo ids follow TradingView's scheme: `country/<ISO 3166 code>` for a national currency (the
first two letters of its ISO 4217 code; the euro is `country/EU`), `crypto/XTVC<CODE>` for a crypto currency.

Run it in a virtual environment with the pinned packages:

    python3 -m venv /tmp/gen && /tmp/gen/bin/pip install pytickersymbols==1.17.10 pycountry==26.2.16 pyyaml
    /tmp/gen/bin/python mock-chart-img/data/gen-symbols.py

The output is deterministic (sorted; no dates but the kept file's `updated_at`); a unit test of the crate checks
that the file parses and lists the symbols issue 18 names.
"""

import json
import re
import sys
from pathlib import Path

import pycountry
import yaml
from pytickersymbols import PyTickerSymbols

HERE = Path(__file__).resolve().parent

GOOGLE_PREFIX = {
    "NYSE": "NYSE",
    "NASDAQ": "NASDAQ",
    "LON": "LSE",
    "ETR": "XETR",
    "FRA": "FWB",
    "TYO": "TSE",
    "AMS": "EURONEXT",
    "EPA": "EURONEXT",
    "EBR": "EURONEXT",
    "BME": "BME",
    "SWX": "SIX",
    "STO": "OMXSTO",
    "HEL": "OMXHEX",
}
YAHOO_SUFFIX = {
    "DE": "XETR",
    "F": "FWB",
    "L": "LSE",
    "T": "TSE",
    "AS": "EURONEXT",
    "PA": "EURONEXT",
    "BR": "EURONEXT",
    "MC": "BME",
    "SW": "SIX",
    "ST": "OMXSTO",
    "HE": "OMXHEX",
}
# The G10 currencies in the market's quoting order: a pair quotes the earlier one in the later one (EURUSD, USDJPY).
G10 = ["EUR", "GBP", "AUD", "NZD", "USD", "CAD", "CHF", "NOK", "SEK", "JPY"]
METALS = ["XAU", "XAG"]
FOREX_FEEDS = ["FX", "OANDA"]
PERPETUAL_EXCHANGES = ["BINANCE", "BYBIT", "OKX", "BITGET"]
FIAT = {c.alpha_3 for c in pycountry.currencies}


def logoid(code):
    """TradingView's logo id of a currency, or None (metals, unknown codes)."""
    if code == "EUR":
        return "country/EU"
    if code in FIAT and not code.startswith("X"):
        return f"country/{code[:2]}"
    if code not in FIAT and re.fullmatch(r"[A-Z0-9]{2,10}", code):
        return f"crypto/XTVC{code}"
    return None


def currency_name(code):
    c = pycountry.currencies.get(alpha_3=code)
    return {"USD": "U.S. Dollar"}.get(code, c.name if c else code)


def listings(sym):
    """(exchange, ticker) pairs of one pytickersymbols listing: from its Google symbol and its Yahoo symbol."""
    google, yahoo = sym.get("google") or "", sym.get("yahoo") or ""
    out = []
    if ":" in google:
        prefix, ticker = google.split(":", 1)
        if prefix in GOOGLE_PREFIX:
            out.append((GOOGLE_PREFIX[prefix], ticker))
    if "." in yahoo:
        ticker, suffix = yahoo.rsplit(".", 1)
        if suffix in YAHOO_SUFFIX:
            out.append((YAHOO_SUFFIX[suffix], ticker))
    return out


def stocks():
    out = {}
    for stock in PyTickerSymbols().get_all_stocks():
        name = stock["name"]
        found = []
        for sym in stock.get("symbols") or []:
            for exchange, ticker in listings(sym):
                found.append((exchange, ticker, sym.get("currency") or ""))
        traded = (stock.get("metadata") or {}).get("traded_as") or ""
        m = re.match(r"\s*(NYSE|Nasdaq)\s*:\s*([A-Z][A-Z0-9.]*)", traded)
        if m and stock.get("symbol"):
            found.append((m.group(1).upper(), stock["symbol"], "USD"))
        for exchange, ticker, currency in found:
            ticker = ticker.upper()
            if not re.fullmatch(r"[A-Z0-9][A-Z0-9._]*", ticker):
                continue
            out.setdefault(exchange, {})[ticker] = {
                "symbol": ticker,
                "description": name,
                "type": "stock",
                "currency_code": currency,
                "typespecs": ["common"],
            }
    return out


def forex():
    pairs = []
    for i, base in enumerate(G10):
        for quote in G10[i + 1 :]:
            pairs.append((base, quote))
    pairs += [(m, "USD") for m in METALS]
    out = {}
    for feed in FOREX_FEEDS:
        for base, quote in pairs:
            entry = {
                "symbol": base + quote,
                "description": f"{currency_name(base)} / {currency_name(quote)}",
                "type": "forex",
                "currency_code": quote,
            }
            out.setdefault(feed, {})[base + quote] = entry
    return out


def main():
    kept = yaml.safe_load((HERE / "symbols-kept.yaml").read_text())
    exchanges = {ex: {e["symbol"]: dict(e) for e in entries} for ex, entries in kept["exchanges"].items()}
    for part in (stocks(), forex()):
        for ex, entries in part.items():
            for ticker, e in entries.items():
                exchanges.setdefault(ex, {}).setdefault(ticker, e)
    for ex in PERPETUAL_EXCHANGES:
        spot = [e for e in exchanges.get(ex, {}).values() if e["type"] == "spot" and e["currency_code"] == "USDT"]
        for e in spot:
            p = e["symbol"] + ".P"
            exchanges[ex].setdefault(
                p,
                {
                    "symbol": p,
                    "description": e["description"].replace(" / USDT", " / USDT Perpetual"),
                    "type": "swap",
                    "currency_code": "USDT",
                },
            )
    for ex, entries in exchanges.items():
        for e in entries.values():
            quote = e.get("currency_code") or ""
            if e["type"] in ("spot", "swap", "forex"):
                base = e["symbol"].removesuffix(".P")
                base = base[: -len(quote)] if quote and base.endswith(quote) else ""
                if base and logoid(base):
                    e.setdefault("base_currency_logoid", logoid(base))
            if quote and logoid(quote if quote != "GBX" else "GBP"):
                e.setdefault("currency_logoid", logoid(quote if quote != "GBX" else "GBP"))
            if "typespecs" not in e:
                e["typespecs"] = {"stock": ["common"], "spot": ["crypto"], "swap": ["perpetual", "crypto"], "futures": ["continuous"]}.get(
                    e["type"], []
                )
    # JSON (which YAML reads too, so a user's catalogue file may be either): the crate parses the built-in one with
    # serde_json at start, far lighter than a YAML parse of the same 2,800 entries. One entry per line for review.
    lines = [
        "{",
        '"//": "GENERATED by gen-symbols.py from symbols-kept.yaml, pytickersymbols and pycountry: do not edit; edit '
        'symbols-kept.yaml or the generator and run it again. The built-in symbol catalogue of mock-chart-img.",',
        f'"updated_at": {json.dumps(kept["updated_at"])},',
        '"exchanges": {',
    ]
    total = 0
    names = sorted(exchanges)
    for i, ex in enumerate(names):
        lines.append(f"{json.dumps(ex)}: [")
        tickers = sorted(exchanges[ex])
        for j, ticker in enumerate(tickers):
            comma = "," if j + 1 < len(tickers) else ""
            lines.append("  " + json.dumps(exchanges[ex][ticker], ensure_ascii=False) + comma)
            total += 1
        lines.append("]" + ("," if i + 1 < len(names) else ""))
    lines += ["}", "}"]
    (HERE / "symbols.json").write_text("\n".join(lines) + "\n")
    print(f"symbols.json: {total} symbols on {len(exchanges)} exchanges", file=sys.stderr)


if __name__ == "__main__":
    main()
