//! Reference data (real airports and airlines, compiled into the example)
//! and the deterministic flight generator.

/// One airport row of `data/airports.csv`.
#[derive(Debug, Clone)]
pub struct AirportRow {
    /// IATA code.
    pub iata: String,
    /// ICAO code.
    pub icao: String,
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
    /// ISO country code.
    pub country: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// IANA time zone.
    pub tz: String,
}

/// One airline row of `data/airlines.csv`.
#[derive(Debug, Clone)]
pub struct AirlineRow {
    /// IATA code.
    pub iata: String,
    /// ICAO code.
    pub icao: String,
    /// Name.
    pub name: String,
    /// Radio callsign.
    pub callsign: String,
    /// ISO country code.
    pub country: String,
}

const AIRPORTS_CSV: &str = include_str!("data/airports.csv");
const AIRLINES_CSV: &str = include_str!("data/airlines.csv");

/// Splits one CSV line: commas separate fields, double quotes protect
/// commas, `""` inside quotes is a quote.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

fn rows(csv: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    csv.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(csv_fields)
}

/// The airports of `data/airports.csv` (rows with a 3-letter IATA code).
pub fn airports() -> Vec<AirportRow> {
    rows(AIRPORTS_CSV)
        .filter(|f| f.len() == 8 && f[0].len() == 3)
        .map(|f| AirportRow {
            iata: f[0].clone(),
            icao: f[1].clone(),
            name: f[2].clone(),
            city: f[3].clone(),
            country: f[4].clone(),
            lat: f[5].parse().unwrap_or(0.0),
            lon: f[6].parse().unwrap_or(0.0),
            tz: f[7].clone(),
        })
        .collect()
}

/// The airlines of `data/airlines.csv` (rows with a 2-character IATA code).
pub fn airlines() -> Vec<AirlineRow> {
    rows(AIRLINES_CSV)
        .filter(|f| f.len() == 5 && f[0].len() == 2)
        .map(|f| AirlineRow {
            iata: f[0].clone(),
            icao: f[1].clone(),
            name: f[2].clone(),
            callsign: f[3].clone(),
            country: f[4].clone(),
        })
        .collect()
}

/// SplitMix64: small, fast, and the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Picks indices with probability proportional to their weight.
pub struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    /// A picker over `weights` (index `i` has weight `weights[i]`).
    pub fn new(weights: impl IntoIterator<Item = u64>) -> Self {
        let mut total = 0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Weighted { cumulative }
    }

    /// A random index, weighted.
    pub fn pick(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0).max(1);
        let x = rng.below(total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

/// Big hubs and their home carrier, busiest first (roughly by passengers).
const HUBS: &[(&str, &str)] = &[
    ("ATL", "DL"),
    ("DXB", "EK"),
    ("DFW", "AA"),
    ("LHR", "BA"),
    ("HND", "NH"),
    ("DEN", "UA"),
    ("IST", "TK"),
    ("LAX", "AA"),
    ("ORD", "UA"),
    ("CDG", "AF"),
    ("DEL", "AI"),
    ("CAN", "CZ"),
    ("JFK", "B6"),
    ("AMS", "KL"),
    ("FRA", "LH"),
    ("PEK", "CA"),
    ("SIN", "SQ"),
    ("MAD", "IB"),
    ("ICN", "KE"),
    ("BKK", "TG"),
    ("SFO", "UA"),
    ("MUC", "LH"),
    ("DOH", "QR"),
    ("SEA", "AS"),
    ("LAS", "WN"),
    ("MIA", "AA"),
    ("CLT", "AA"),
    ("PVG", "MU"),
    ("BCN", "VY"),
    ("YYZ", "AC"),
    ("SYD", "QF"),
    ("FCO", "AZ"),
    ("MEX", "AM"),
    ("GRU", "LA"),
    ("HKG", "CX"),
    ("ZRH", "LX"),
    ("VIE", "OS"),
    ("CPH", "SK"),
    ("EWR", "UA"),
    ("BOS", "B6"),
];

/// A generated flight (times in Unix seconds, UTC).
#[derive(Debug, Clone)]
pub struct NewFlightRow {
    /// Flight number, e.g. `LH400`.
    pub flightno: String,
    /// Index into the airlines.
    pub airline: usize,
    /// Index into the airports: departure.
    pub src: usize,
    /// Index into the airports: arrival.
    pub dst: usize,
    /// Departure time.
    pub departure: i64,
    /// Arrival time.
    pub arrival: i64,
    /// Seats.
    pub seats: i32,
}

/// 2026-01-01T00:00:00Z: the schedule covers the year 2026.
pub const SCHEDULE_START: i64 = 1_767_225_600;
const DAYS: i64 = 365;

/// Generates flights from a seed: hub-heavy routes (the 40 big hubs carry
/// about half of all traffic, international airports most of the rest),
/// home carriers on their hubs, daily peaks in the morning and evening, and
/// block times from the great-circle distance.
pub struct FlightGenerator<'a> {
    airports: &'a [AirportRow],
    airlines: &'a [AirlineRow],
    rng: Rng,
    airport_pick: Weighted,
    hub_carrier: Vec<Option<usize>>,
    hour_pick: Weighted,
}

impl<'a> FlightGenerator<'a> {
    /// A generator over these airports and airlines; the same seed gives
    /// the same flights.
    pub fn new(airports: &'a [AirportRow], airlines: &'a [AirlineRow], seed: u64) -> Self {
        let airline_index = |code: &str| airlines.iter().position(|a| a.iata == code);
        let mut hub_carrier = vec![None; airports.len()];
        let weights = airports.iter().enumerate().map(|(i, a)| {
            if let Some(rank) = HUBS.iter().position(|(h, _)| *h == a.iata) {
                hub_carrier[i] = airline_index(HUBS[rank].1);
                // Zipf-like over the hub ranking.
                40_000 / (rank as u64 + 4)
            } else if a.name.contains("International") {
                40
            } else {
                2
            }
        });
        let airport_pick = Weighted::new(weights.collect::<Vec<_>>());
        // Departures per hour of day (UTC, a simplification): two peaks.
        let hour_pick = Weighted::new([
            1, 1, 1, 1, 2, 4, 8, 10, 10, 8, 7, 6, 6, 6, 7, 8, 9, 10, 10, 8, 6, 4, 2, 1,
        ]);
        FlightGenerator {
            airports,
            airlines,
            rng: Rng::new(seed),
            airport_pick,
            hub_carrier,
            hour_pick,
        }
    }

    /// The next flight.
    pub fn next_flight(&mut self) -> NewFlightRow {
        let src = self.airport_pick.pick(&mut self.rng);
        let mut dst = self.airport_pick.pick(&mut self.rng);
        while dst == src {
            dst = self.airport_pick.pick(&mut self.rng);
        }
        // The home carrier of either end most of the time, else any airline.
        let airline = match (
            self.hub_carrier[src],
            self.hub_carrier[dst],
            self.rng.below(10),
        ) {
            (Some(a), _, 0..=5) => a,
            (_, Some(a), 0..=3) => a,
            _ => self.rng.below(self.airlines.len() as u64) as usize,
        };
        let day = self.rng.below(DAYS as u64) as i64;
        let hour = self.hour_pick.pick(&mut self.rng) as i64;
        let minute = 5 * self.rng.below(12) as i64;
        let departure = SCHEDULE_START + day * 86_400 + hour * 3600 + minute * 60;
        let (s, d) = (&self.airports[src], &self.airports[dst]);
        let km = distance_km((s.lat, s.lon), (d.lat, d.lon));
        let arrival = departure + block_seconds(km);
        let seats = match km {
            k if k < 800.0 => 70 + 10 * self.rng.below(11) as i32,
            k if k < 4000.0 => 150 + 10 * self.rng.below(8) as i32,
            _ => 250 + 10 * self.rng.below(15) as i32,
        };
        let flightno = format!(
            "{}{}",
            self.airlines[airline].iata,
            1 + self.rng.below(9999)
        );
        NewFlightRow {
            flightno,
            airline,
            src,
            dst,
            departure,
            arrival,
            seats,
        }
    }
}

/// Great-circle distance between two (lat, lon) points in degrees.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Scheduled block time: 30 minutes plus 800 km per hour.
pub fn block_seconds(km: f64) -> i64 {
    60 * (30.0 + km / 800.0 * 60.0).round() as i64
}

/// `1767225600` -> `2026-01-01T00:00:00Z`.
pub fn iso(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (also with `+00:00`) into Unix seconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut t = time.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next().unwrap_or("0").parse().ok()?,
    );
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    let valid = (1970..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=days_in_month(y, m)).contains(&day)
        && (0..24).contains(&hh)
        && (0..60).contains(&mm)
        && (0..60).contains(&ss);
    valid.then(|| days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_data_loads() {
        assert_eq!(airports().len(), 7884);
        assert_eq!(airlines().len(), 963);
        let fra = airports().into_iter().find(|a| a.iata == "FRA").unwrap();
        assert_eq!(fra.city, "Frankfurt am Main");
        let quoted = airports().into_iter().find(|a| a.iata == "AAP").unwrap();
        assert_eq!(quoted.city, "Samarinda, Borneo Island");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(iso(SCHEDULE_START), "2026-01-01T00:00:00Z");
        for ts in [0, SCHEDULE_START, 1_796_083_199, 951_782_400] {
            assert_eq!(parse_iso(&iso(ts)), Some(ts));
        }
        assert_eq!(parse_iso("2026-12-01T10:00:00Z"), Some(1_796_119_200));
        assert_eq!(parse_iso("2026-02-30T10:00:00Z"), None);
        assert_eq!(parse_iso("2026-12-01 10:00"), None);
    }

    #[test]
    fn the_generator_is_deterministic_and_hub_heavy() {
        let (ap, al) = (airports(), airlines());
        let mut a = FlightGenerator::new(&ap, &al, 7);
        let mut b = FlightGenerator::new(&ap, &al, 7);
        let mut hub_ends = 0;
        for _ in 0..10_000 {
            let (x, y) = (a.next_flight(), b.next_flight());
            assert_eq!((x.src, x.dst, x.departure), (y.src, y.dst, y.departure));
            assert_ne!(x.src, x.dst);
            assert!(x.arrival > x.departure);
            hub_ends += usize::from(HUBS.iter().any(|(h, _)| *h == ap[x.src].iata));
        }
        assert!(hub_ends > 3_000, "hubs carry a large share: {hub_ends}");
    }
}
