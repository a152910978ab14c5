/* Country → region selects for every puqpanel address form.
 *
 * Markup:
 *   <select class="puq-country" data-regions-url="/clients/regions/XX">…countries…</select>
 *   <select class="puq-region">…</select>
 * data-regions-url is url_for('ClientDirectoryView.regions', country='XX'); the trailing XX is replaced
 * by the chosen country code. The region select updated is the first .puq-region in the country's nearest
 * .modal-body or form. Its first option is kept when its value is "" (the "none" choice); the previous
 * region stays selected when the new country has it. Works for selects added later and with select2.
 */
(function ($) {
  "use strict";

  function regionSelectFor($country) {
    var $scope = $country.closest(".modal-body, form");
    return ($scope.length ? $scope : $(document.body)).find("select.puq-region").first();
  }

  function fill($region, regions, keep) {
    var $first = $region.find("option").first();
    $region.empty();
    if ($first.length && $first.val() === "") {
      $region.append($first.prop("selected", false));
    }
    $.each(regions, function (_, r) {
      $region.append($("<option>").val(r.code).text(r.name).prop("selected", r.code === keep));
    });
    if (!$region.find("option:selected").length) {
      $region.prop("selectedIndex", 0);
    }
    $region.trigger("change");
  }

  $(document).on("change", "select.puq-country[data-regions-url]", function () {
    var $country = $(this);
    var $region = regionSelectFor($country);
    if (!$region.length) { return; }
    var code = $country.val() || "";
    var keep = $region.val();
    var request = ($region.data("puq-request") || 0) + 1;
    $region.data("puq-request", request);
    if (!/^[A-Za-z]{2}$/.test(code)) {
      fill($region, [], keep);
      return;
    }
    var url = String($country.data("regions-url")).replace(/XX$/, encodeURIComponent(code));
    $.getJSON(url)
      .done(function (data) {
        if ($region.data("puq-request") === request) { fill($region, data.regions || [], keep); }
      })
      .fail(function () {
        if ($region.data("puq-request") === request) { fill($region, [], keep); }
      });
  });
})(window.jQuery);
