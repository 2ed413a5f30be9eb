//! The emoji table: emojivoto's shortcodes with their characters, in its
//! order, and the voting method of each (`Vote` + the shortcode in
//! CamelCase).

/// The emoji whose votes fail: emojivoto's deliberate bug.
pub const DOUGHNUT: &str = ":doughnut:";

/// One emoji of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emoji {
    /// `:name:`, as emojivoto's (gemoji's) shortcodes.
    pub shortcode: &'static str,
    pub unicode: &'static str,
}

impl Emoji {
    const fn new(shortcode: &'static str, unicode: &'static str) -> Self {
        Self { shortcode, unicode }
    }
}

/// The emoji with this shortcode.
pub fn find(shortcode: &str) -> Option<&'static Emoji> {
    ALL.iter().find(|e| e.shortcode == shortcode)
}

/// The VotingService method of a shortcode: `:point_up_2:` is
/// `VotePointUp2`. `None` for a string that is not `:name:`.
pub fn vote_method(shortcode: &str) -> Option<String> {
    let name = shortcode.strip_prefix(':')?.strip_suffix(':')?;
    if name.is_empty() || name.split('_').any(str::is_empty) {
        return None;
    }
    let mut method = String::from("Vote");
    for part in name.split('_') {
        let mut chars = part.chars();
        let first = chars.next()?;
        method.extend(first.to_uppercase());
        method.push_str(chars.as_str());
    }
    Some(method)
}

/// The emoji a VotingService method votes for (`VoteDoughnut` →
/// `:doughnut:`, `VoteRelaxed` → `:relaxed:`); `None` if no emoji of
/// [`ALL`] or [`VOTE_ONLY`] has it.
pub fn by_vote_method(method: &str) -> Option<&'static Emoji> {
    ALL.iter()
        .chain(VOTE_ONLY)
        .find(|e| vote_method(e.shortcode).as_deref() == Some(method))
}

/// The emojis, in the order `ListAll` returns them: emojivoto's list
/// (`top100Emoji` in `emojivoto-emoji-svc/emoji/emoji.go`, 99 entries despite
/// its name), with their gemoji characters.
pub const ALL: &[Emoji] = &[
    Emoji::new(":joy:", "😂"),
    Emoji::new(":sunglasses:", "😎"),
    Emoji::new(":doughnut:", "🍩"),
    Emoji::new(":stuck_out_tongue_winking_eye:", "😜"),
    Emoji::new(":money_mouth_face:", "🤑"),
    Emoji::new(":flushed:", "😳"),
    Emoji::new(":mask:", "😷"),
    Emoji::new(":nerd_face:", "🤓"),
    Emoji::new(":ghost:", "👻"),
    Emoji::new(":skull_and_crossbones:", "☠️"),
    Emoji::new(":heart_eyes_cat:", "😻"),
    Emoji::new(":hear_no_evil:", "🙉"),
    Emoji::new(":see_no_evil:", "🙈"),
    Emoji::new(":speak_no_evil:", "🙊"),
    Emoji::new(":boy:", "👦"),
    Emoji::new(":girl:", "👧"),
    Emoji::new(":man:", "👨"),
    Emoji::new(":woman:", "👩"),
    Emoji::new(":older_man:", "👴"),
    Emoji::new(":policeman:", "👮‍♂️"),
    Emoji::new(":guardsman:", "💂‍♂️"),
    Emoji::new(":construction_worker_man:", "👷‍♂️"),
    Emoji::new(":prince:", "🤴"),
    Emoji::new(":princess:", "👸"),
    Emoji::new(":man_in_tuxedo:", "🤵‍♂️"),
    Emoji::new(":bride_with_veil:", "👰‍♀️"),
    Emoji::new(":mrs_claus:", "🤶"),
    Emoji::new(":santa:", "🎅"),
    Emoji::new(":turkey:", "🦃"),
    Emoji::new(":rabbit:", "🐰"),
    Emoji::new(":no_good_woman:", "🙅‍♀️"),
    Emoji::new(":ok_woman:", "🙆‍♀️"),
    Emoji::new(":raising_hand_woman:", "🙋‍♀️"),
    Emoji::new(":bowing_man:", "🙇‍♂️"),
    Emoji::new(":man_facepalming:", "🤦‍♂️"),
    Emoji::new(":woman_shrugging:", "🤷‍♀️"),
    Emoji::new(":massage_woman:", "💆‍♀️"),
    Emoji::new(":walking_man:", "🚶‍♂️"),
    Emoji::new(":running_man:", "🏃‍♂️"),
    Emoji::new(":dancer:", "💃"),
    Emoji::new(":man_dancing:", "🕺"),
    Emoji::new(":dancing_women:", "👯‍♀️"),
    Emoji::new(":rainbow:", "🌈"),
    Emoji::new(":skier:", "⛷️"),
    Emoji::new(":golfing_man:", "🏌️‍♂️"),
    Emoji::new(":surfing_man:", "🏄‍♂️"),
    Emoji::new(":basketball_man:", "⛹️‍♂️"),
    Emoji::new(":biking_man:", "🚴‍♂️"),
    Emoji::new(":point_up_2:", "👆"),
    Emoji::new(":vulcan_salute:", "🖖"),
    Emoji::new(":metal:", "🤘"),
    Emoji::new(":call_me_hand:", "🤙"),
    Emoji::new(":thumbsup:", "👍"),
    Emoji::new(":wave:", "👋"),
    Emoji::new(":clap:", "👏"),
    Emoji::new(":raised_hands:", "🙌"),
    Emoji::new(":pray:", "🙏"),
    Emoji::new(":dog:", "🐶"),
    Emoji::new(":cat2:", "🐈"),
    Emoji::new(":pig:", "🐷"),
    Emoji::new(":hatching_chick:", "🐣"),
    Emoji::new(":snail:", "🐌"),
    Emoji::new(":bacon:", "🥓"),
    Emoji::new(":pizza:", "🍕"),
    Emoji::new(":taco:", "🌮"),
    Emoji::new(":burrito:", "🌯"),
    Emoji::new(":ramen:", "🍜"),
    Emoji::new(":champagne:", "🍾"),
    Emoji::new(":tropical_drink:", "🍹"),
    Emoji::new(":beer:", "🍺"),
    Emoji::new(":tumbler_glass:", "🥃"),
    Emoji::new(":world_map:", "🗺️"),
    Emoji::new(":beach_umbrella:", "🏖️"),
    Emoji::new(":mountain_snow:", "🏔️"),
    Emoji::new(":camping:", "🏕️"),
    Emoji::new(":steam_locomotive:", "🚂"),
    Emoji::new(":flight_departure:", "🛫"),
    Emoji::new(":rocket:", "🚀"),
    Emoji::new(":star2:", "🌟"),
    Emoji::new(":sun_behind_small_cloud:", "🌤️"),
    Emoji::new(":cloud_with_rain:", "🌧️"),
    Emoji::new(":fire:", "🔥"),
    Emoji::new(":jack_o_lantern:", "🎃"),
    Emoji::new(":balloon:", "🎈"),
    Emoji::new(":tada:", "🎉"),
    Emoji::new(":trophy:", "🏆"),
    Emoji::new(":iphone:", "📱"),
    Emoji::new(":pager:", "📟"),
    Emoji::new(":fax:", "📠"),
    Emoji::new(":bulb:", "💡"),
    Emoji::new(":money_with_wings:", "💸"),
    Emoji::new(":crystal_ball:", "🔮"),
    Emoji::new(":underage:", "🔞"),
    Emoji::new(":interrobang:", "⁉️"),
    Emoji::new(":100:", "💯"),
    Emoji::new(":checkered_flag:", "🏁"),
    Emoji::new(":crossed_swords:", "⚔️"),
    Emoji::new(":floppy_disk:", "💾"),
    Emoji::new(":poop:", "💩"),
];

/// Emojis that `VotingService` takes votes for but `ListAll` does not
/// list: emojivoto's proto has `VoteRelaxed`, and its `:relaxed:` is in
/// no list, so web never votes for it (`FindByShortcode` finds nothing).
pub const VOTE_ONLY: &[Emoji] = &[Emoji::new(":relaxed:", "☺️")];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_table_is_emojivotos_list_with_no_duplicates() {
        // emojivoto's `top100Emoji` has 99 entries; `ListAll` returns them
        // in this order, starting and ending so.
        assert_eq!(ALL.len(), 99);
        let first: Vec<_> = ALL[..3].iter().map(|e| e.shortcode).collect();
        assert_eq!(first, [":joy:", ":sunglasses:", DOUGHNUT]);
        assert_eq!(ALL[ALL.len() - 1].shortcode, ":poop:");
        assert!(find(":100:").is_some() && find(":jack_o_lantern:").is_some());
        // `:relaxed:` can be voted for but is not listed, as in emojivoto.
        assert_eq!(find(":relaxed:"), None);
        let codes: HashSet<_> = ALL.iter().map(|e| e.shortcode).collect();
        assert_eq!(codes.len(), ALL.len(), "a shortcode is listed twice");
        let chars: HashSet<_> = ALL.iter().map(|e| e.unicode).collect();
        assert_eq!(chars.len(), ALL.len(), "a character is listed twice");
        for e in ALL {
            assert!(vote_method(e.shortcode).is_some(), "{e:?}");
            assert!(!e.unicode.is_empty() && !e.unicode.is_ascii(), "{e:?}");
        }
        assert_eq!(find(DOUGHNUT).map(|e| e.unicode), Some("🍩"));
    }

    #[test]
    fn vote_methods_are_the_shortcode_in_camel_case() {
        let cases = [
            (":doughnut:", Some("VoteDoughnut")),
            (":point_up_2:", Some("VotePointUp2")),
            (
                ":stuck_out_tongue_winking_eye:",
                Some("VoteStuckOutTongueWinkingEye"),
            ),
            (":cat2:", Some("VoteCat2")),
            ("doughnut", None),
            ("::", None),
            (":a__b:", None),
            ("", None),
        ];
        for (code, want) in cases {
            assert_eq!(vote_method(code).as_deref(), want, "{code:?}");
        }
        assert_eq!(
            by_vote_method("VoteDoughnut").map(|e| e.shortcode),
            Some(DOUGHNUT)
        );
        assert_eq!(
            by_vote_method("Vote100").map(|e| e.shortcode),
            Some(":100:")
        );
        assert_eq!(
            by_vote_method("VoteRelaxed").map(|e| e.shortcode),
            Some(":relaxed:")
        );
        assert_eq!(by_vote_method("VoteNothing"), None);
        assert_eq!(by_vote_method("Results"), None);
    }

    /// voting.proto has one `Vote<Name>` per emoji of [`ALL`] and
    /// [`VOTE_ONLY`], and `Results`, and nothing else: emojivoto's 100 vote
    /// methods. The proto and the table cannot drift apart.
    #[test]
    fn the_proto_has_one_vote_method_per_emoji() {
        let proto = include_str!("../proto/voting.proto");
        let mut rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .collect();
        let mut want: Vec<String> = ALL
            .iter()
            .chain(VOTE_ONLY)
            .filter_map(|e| vote_method(e.shortcode))
            .collect();
        want.push("Results".into());
        assert_eq!(rpcs.len(), 101, "emojivoto's 100 votes and Results");
        rpcs.sort_unstable();
        want.sort_unstable();
        assert_eq!(rpcs, want);
    }
}
