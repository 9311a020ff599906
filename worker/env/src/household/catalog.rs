//! What household worlds are made of: rooms with layout templates, receptacle kinds, and
//! object kinds with where they plausibly lie and what can be done to them.
//!
//! The last layout template of each room, and object kinds marked `unseen`, appear only in the
//! test split, like ALFWorld's valid_unseen: the search never sees them.

/// What an appliance does to an object used with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Treatment {
    /// `clean X with Y` at a sink or bathtub.
    Clean,
    /// `heat X with Y` at a microwave.
    Heat,
    /// `cool X with Y` at a fridge.
    Cool,
}

impl Treatment {
    /// The command verb.
    pub fn verb(self) -> &'static str {
        match self {
            Treatment::Clean => "clean",
            Treatment::Heat => "heat",
            Treatment::Cool => "cool",
        }
    }

    /// The adjective a goal uses.
    pub fn adjective(self) -> &'static str {
        match self {
            Treatment::Clean => "clean",
            Treatment::Heat => "hot",
            Treatment::Cool => "cool",
        }
    }
}

/// A kind of receptacle.
#[derive(Debug)]
pub struct ReceptacleKind {
    /// Its name, as in `fridge 1`.
    pub name: &'static str,
    /// Starts closed and must be opened to reach inside.
    pub openable: bool,
    /// `in` or `on`.
    pub preposition: &'static str,
    /// What using an object with it does.
    pub appliance: Option<Treatment>,
}

const fn r(
    name: &'static str,
    openable: bool,
    preposition: &'static str,
    appliance: Option<Treatment>,
) -> ReceptacleKind {
    ReceptacleKind {
        name,
        openable,
        preposition,
        appliance,
    }
}

/// Every receptacle kind.
pub static RECEPTACLES: &[ReceptacleKind] = &[
    r("cabinet", true, "in", None),
    r("drawer", true, "in", None),
    r("fridge", true, "in", Some(Treatment::Cool)),
    r("microwave", true, "in", Some(Treatment::Heat)),
    r("safe", true, "in", None),
    r("countertop", false, "on", None),
    r("diningtable", false, "on", None),
    r("coffeetable", false, "on", None),
    r("sidetable", false, "on", None),
    r("desk", false, "on", None),
    r("dresser", false, "on", None),
    r("shelf", false, "on", None),
    r("bed", false, "on", None),
    r("sofa", false, "on", None),
    r("armchair", false, "on", None),
    r("sinkbasin", false, "in", Some(Treatment::Clean)),
    r("bathtubbasin", false, "in", Some(Treatment::Clean)),
    r("garbagecan", false, "in", None),
    r("stoveburner", false, "on", None),
    r("toilet", false, "on", None),
    r("towelholder", false, "on", None),
    r("tvstand", false, "on", None),
    r("laundryhamper", false, "in", None),
];

/// Looks a receptacle kind up by name.
pub fn receptacle(name: &str) -> &'static ReceptacleKind {
    RECEPTACLES
        .iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("catalog names unknown receptacle kind {name}"))
}

/// A kind of object.
#[derive(Debug)]
pub struct ObjectKind {
    /// Its name, as in `apple 1`.
    pub name: &'static str,
    /// Receptacle kinds it is found in, and may be asked to be put in.
    pub found: &'static [&'static str],
    /// Treatments that apply to it.
    pub treatments: &'static [Treatment],
    /// It can be picked up (a desk lamp cannot).
    pub portable: bool,
    /// Only in the test split.
    pub unseen: bool,
}

use Treatment::{Clean, Cool, Heat};

const ALL: &[Treatment] = &[Clean, Heat, Cool];
const FOOD: &[Treatment] = &[Clean, Heat, Cool];

const fn o(
    name: &'static str,
    found: &'static [&'static str],
    treatments: &'static [Treatment],
    unseen: bool,
) -> ObjectKind {
    ObjectKind {
        name,
        found,
        treatments,
        portable: true,
        unseen,
    }
}

/// A room type: its layout templates and the objects found in it.
#[derive(Debug)]
pub struct Room {
    /// Its name.
    pub name: &'static str,
    /// Layout templates: receptacle kinds with (min, max) counts. The last is test-only.
    pub layouts: &'static [&'static [(&'static str, u8, u8)]],
    /// Object kinds found here.
    pub objects: &'static [ObjectKind],
    /// Whether a desk lamp stands here (for examine-in-light tasks).
    pub lamp: bool,
}

/// The four room types.
pub static ROOMS: &[Room] = &[
    Room {
        name: "kitchen",
        layouts: &[
            &[
                ("countertop", 1, 3),
                ("cabinet", 2, 6),
                ("drawer", 1, 4),
                ("fridge", 1, 1),
                ("microwave", 1, 1),
                ("sinkbasin", 1, 1),
                ("stoveburner", 2, 4),
                ("garbagecan", 1, 1),
            ],
            &[
                ("countertop", 1, 2),
                ("diningtable", 1, 1),
                ("cabinet", 3, 8),
                ("drawer", 2, 5),
                ("fridge", 1, 1),
                ("microwave", 1, 1),
                ("sinkbasin", 1, 1),
                ("stoveburner", 4, 4),
                ("shelf", 1, 3),
                ("garbagecan", 1, 1),
            ],
            // Test only: an open-plan kitchen with a dining table and no drawers.
            &[
                ("countertop", 2, 3),
                ("diningtable", 1, 2),
                ("cabinet", 4, 9),
                ("fridge", 1, 1),
                ("microwave", 1, 1),
                ("sinkbasin", 1, 2),
                ("stoveburner", 2, 2),
                ("shelf", 2, 3),
                ("garbagecan", 1, 1),
            ],
        ],
        objects: &[
            o(
                "apple",
                &["countertop", "fridge", "diningtable", "garbagecan"],
                FOOD,
                false,
            ),
            o(
                "bread",
                &["countertop", "diningtable", "fridge"],
                &[Heat, Cool],
                false,
            ),
            o("egg", &["fridge", "countertop", "diningtable"], FOOD, true),
            o(
                "lettuce",
                &["fridge", "countertop", "diningtable"],
                FOOD,
                false,
            ),
            o(
                "potato",
                &["fridge", "countertop", "garbagecan", "sinkbasin"],
                FOOD,
                false,
            ),
            o(
                "tomato",
                &["fridge", "countertop", "diningtable", "sinkbasin"],
                FOOD,
                false,
            ),
            o(
                "mug",
                &["cabinet", "countertop", "shelf", "sinkbasin"],
                ALL,
                false,
            ),
            o(
                "cup",
                &["cabinet", "countertop", "fridge", "sinkbasin"],
                ALL,
                false,
            ),
            o(
                "plate",
                &["cabinet", "countertop", "diningtable", "shelf"],
                ALL,
                false,
            ),
            o(
                "bowl",
                &["cabinet", "countertop", "fridge", "shelf"],
                ALL,
                false,
            ),
            o(
                "pan",
                &["stoveburner", "cabinet", "countertop"],
                &[Clean, Cool],
                false,
            ),
            o(
                "pot",
                &["stoveburner", "cabinet", "countertop"],
                &[Clean, Cool],
                false,
            ),
            o(
                "knife",
                &["countertop", "drawer", "diningtable"],
                &[Clean],
                false,
            ),
            o(
                "fork",
                &["drawer", "countertop", "diningtable"],
                &[Clean],
                false,
            ),
            o(
                "spoon",
                &["drawer", "countertop", "diningtable"],
                &[Clean],
                false,
            ),
            o("spatula", &["drawer", "countertop"], &[Clean], false),
            o(
                "saltshaker",
                &["cabinet", "countertop", "shelf"],
                &[],
                false,
            ),
            o(
                "dishsponge",
                &["sinkbasin", "countertop", "cabinet"],
                &[Clean],
                false,
            ),
            o(
                "winebottle",
                &["cabinet", "countertop", "fridge", "shelf"],
                &[Cool],
                false,
            ),
            o(
                "kettle",
                &["stoveburner", "cabinet", "countertop", "shelf"],
                &[Clean, Cool],
                true,
            ),
            o(
                "ladle",
                &["drawer", "countertop", "diningtable"],
                &[Clean],
                true,
            ),
            o(
                "peppershaker",
                &["cabinet", "countertop", "shelf"],
                &[],
                true,
            ),
        ],
        lamp: false,
    },
    Room {
        name: "bathroom",
        layouts: &[
            &[
                ("countertop", 1, 1),
                ("cabinet", 1, 4),
                ("drawer", 0, 3),
                ("sinkbasin", 1, 2),
                ("toilet", 1, 1),
                ("towelholder", 1, 1),
                ("garbagecan", 1, 1),
            ],
            &[
                ("countertop", 1, 1),
                ("cabinet", 2, 4),
                ("sinkbasin", 1, 1),
                ("bathtubbasin", 1, 1),
                ("toilet", 1, 1),
                ("shelf", 1, 2),
                ("garbagecan", 1, 1),
            ],
            // Test only: a large bathroom with two basins and many drawers.
            &[
                ("countertop", 1, 2),
                ("drawer", 3, 6),
                ("sinkbasin", 2, 2),
                ("bathtubbasin", 1, 1),
                ("toilet", 1, 1),
                ("towelholder", 1, 2),
                ("shelf", 0, 2),
                ("garbagecan", 1, 1),
            ],
        ],
        objects: &[
            o(
                "soapbar",
                &["countertop", "sinkbasin", "bathtubbasin", "toilet"],
                &[Clean],
                false,
            ),
            o(
                "cloth",
                &["countertop", "cabinet", "bathtubbasin", "drawer"],
                &[Clean],
                false,
            ),
            o("towel", &["towelholder", "countertop", "shelf"], &[], false),
            o(
                "toiletpaper",
                &["toilet", "countertop", "cabinet", "drawer"],
                &[],
                false,
            ),
            o(
                "soapbottle",
                &["countertop", "cabinet", "toilet", "shelf"],
                &[],
                false,
            ),
            o(
                "spraybottle",
                &["cabinet", "countertop", "toilet", "garbagecan"],
                &[],
                false,
            ),
            o(
                "candle",
                &["countertop", "cabinet", "shelf", "toilet"],
                &[],
                false,
            ),
            o("tissuebox", &["countertop", "shelf", "toilet"], &[], false),
            o(
                "scrubbrush",
                &["toilet", "cabinet", "countertop"],
                &[Clean],
                true,
            ),
            o("plunger", &["toilet", "cabinet", "garbagecan"], &[], true),
        ],
        lamp: false,
    },
    Room {
        name: "bedroom",
        layouts: &[
            &[
                ("bed", 1, 1),
                ("desk", 1, 1),
                ("sidetable", 1, 2),
                ("drawer", 2, 5),
                ("shelf", 0, 3),
                ("garbagecan", 1, 1),
            ],
            &[
                ("bed", 1, 1),
                ("dresser", 1, 1),
                ("sidetable", 2, 2),
                ("drawer", 3, 6),
                ("safe", 0, 1),
                ("garbagecan", 1, 1),
            ],
            // Test only: a study bedroom with a safe, a hamper and shelves.
            &[
                ("bed", 1, 1),
                ("desk", 1, 2),
                ("drawer", 1, 3),
                ("shelf", 2, 4),
                ("safe", 1, 1),
                ("laundryhamper", 1, 1),
                ("garbagecan", 1, 1),
            ],
        ],
        objects: &[
            o(
                "book",
                &["bed", "desk", "shelf", "sidetable", "drawer", "dresser"],
                &[],
                false,
            ),
            o(
                "cellphone",
                &["bed", "desk", "sidetable", "drawer", "dresser"],
                &[],
                false,
            ),
            o("laptop", &["bed", "desk", "dresser"], &[], false),
            o("pen", &["desk", "drawer", "sidetable", "shelf"], &[], false),
            o(
                "pencil",
                &["desk", "drawer", "sidetable", "shelf"],
                &[],
                false,
            ),
            o(
                "alarmclock",
                &["desk", "sidetable", "dresser", "shelf"],
                &[],
                false,
            ),
            o(
                "creditcard",
                &["desk", "drawer", "sidetable", "dresser", "safe"],
                &[],
                false,
            ),
            o(
                "keychain",
                &["drawer", "dresser", "sidetable", "safe"],
                &[],
                false,
            ),
            o("pillow", &["bed", "laundryhamper"], &[], false),
            o("cd", &["desk", "drawer", "safe", "shelf"], &[], true),
            o("teddybear", &["bed", "shelf", "laundryhamper"], &[], true),
        ],
        lamp: true,
    },
    Room {
        name: "livingroom",
        layouts: &[
            &[
                ("sofa", 1, 1),
                ("coffeetable", 1, 1),
                ("sidetable", 1, 2),
                ("drawer", 0, 3),
                ("shelf", 1, 3),
                ("tvstand", 1, 1),
                ("garbagecan", 1, 1),
            ],
            &[
                ("sofa", 1, 2),
                ("armchair", 1, 2),
                ("coffeetable", 1, 1),
                ("diningtable", 1, 1),
                ("cabinet", 1, 3),
                ("sidetable", 1, 1),
                ("garbagecan", 1, 1),
            ],
            // Test only: a lounge with armchairs and cabinets but no shelves.
            &[
                ("sofa", 1, 1),
                ("armchair", 2, 3),
                ("coffeetable", 1, 2),
                ("sidetable", 2, 3),
                ("cabinet", 2, 4),
                ("drawer", 1, 2),
                ("garbagecan", 1, 1),
            ],
        ],
        objects: &[
            o(
                "remotecontrol",
                &["sofa", "coffeetable", "sidetable", "armchair", "tvstand"],
                &[],
                false,
            ),
            o(
                "newspaper",
                &["sofa", "coffeetable", "diningtable", "sidetable"],
                &[],
                false,
            ),
            o("pillow", &["sofa", "armchair"], &[], false),
            o(
                "keychain",
                &["coffeetable", "sidetable", "drawer", "cabinet"],
                &[],
                false,
            ),
            o(
                "creditcard",
                &["coffeetable", "sidetable", "drawer", "diningtable"],
                &[],
                false,
            ),
            o(
                "box",
                &["coffeetable", "sofa", "diningtable", "cabinet"],
                &[],
                false,
            ),
            o(
                "laptop",
                &["sofa", "coffeetable", "diningtable"],
                &[],
                false,
            ),
            o(
                "book",
                &["shelf", "coffeetable", "sidetable", "sofa"],
                &[],
                false,
            ),
            o(
                "vase",
                &["shelf", "coffeetable", "diningtable", "tvstand", "cabinet"],
                &[],
                false,
            ),
            o(
                "statue",
                &["shelf", "coffeetable", "sidetable", "cabinet"],
                &[],
                true,
            ),
            o(
                "watch",
                &["coffeetable", "sidetable", "drawer", "armchair"],
                &[],
                true,
            ),
        ],
        lamp: true,
    },
];

/// Where a desk lamp may stand.
pub const LAMP_ON: &[&str] = &["desk", "sidetable", "dresser"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_only_known_receptacles() {
        for room in ROOMS {
            for layout in room.layouts {
                for (kind, min, max) in *layout {
                    let _ = receptacle(kind);
                    assert!(
                        min <= max && *max >= 1 || *max == 0,
                        "{}: {kind}",
                        room.name
                    );
                }
            }
            for obj in room.objects {
                for kind in obj.found {
                    let _ = receptacle(kind);
                }
                assert!(
                    room.layouts[..room.layouts.len() - 1]
                        .iter()
                        .any(|l| l.iter().any(|(k, _, _)| obj.found.contains(k))),
                    "{} in {} has nowhere to be in seen layouts",
                    obj.name,
                    room.name
                );
            }
            assert!(room.objects.iter().any(|o| o.unseen), "{}", room.name);
            assert!(room.layouts.len() >= 2, "{}", room.name);
        }
    }
}
